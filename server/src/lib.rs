//! `skiff-server`: the control plane.
//!
//! Start reading at [`run`]: it validates the [`Config`], prepares the PKI and the admin
//! kubeconfig, opens the [`store`], creates the objects every cluster has, and serves the
//! Kubernetes API from [`api`]. Each kind's rules (defaults, validation, printer columns,
//! schemas and patch metadata) live in [`registry`]. Background work that upstream does
//! in controllers lives in [`controllers`].

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod controllers;
pub mod encryption;
pub mod join;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod tls;

use ipnet::Ipv4Net;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything `skiff server` is told, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data folder (`server/` below it holds the database and certificates).
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub bind_address: IpAddr,
    /// The HTTPS port.
    pub https_port: u16,
    /// The address other hosts reach this server at.
    pub advertise_address: Option<IpAddr>,
    /// Extra subject alternative names of the serving certificate.
    pub tls_sans: Vec<String>,
    /// Where to write the admin kubeconfig.
    pub write_kubeconfig: PathBuf,
    /// The kubeconfig's file mode.
    pub write_kubeconfig_mode: u32,
    /// The Service network.
    pub service_cidr: Ipv4Net,
    /// The pod network.
    pub cluster_cidr: Ipv4Net,
    /// The cluster DNS address (`--cluster-dns`), held by the `kube-dns` Service.
    pub cluster_dns: std::net::Ipv4Addr,
    /// The cluster's DNS domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// How nodes reach each other's pods (`--network-backend`).
    pub network_backend: String,
    /// The NodePort range, inclusive.
    pub service_node_port_range: (u16, u16),
    /// The node that runs in this process, if one does (its name and address): the
    /// server issues its credentials once the API serves.
    pub node: Option<(String, IpAddr)>,
    /// Do not run the scheduler.
    pub disable_scheduler: bool,
    /// Do not run the controllers.
    pub disable_controller_manager: bool,
    /// Scheduler settings.
    pub scheduler: scheduler::Config,
    /// Controller settings.
    pub controllers: controllers::Config,
    /// The server token, the secret alone or the whole secure token (`--token`); kept
    /// from the last start, or made, when not given.
    pub token: Option<String>,
    /// A token that can only join agents (`--agent-token`).
    pub agent_token: Option<String>,
    /// Encrypt Secrets at rest (`--secrets-encryption`); once turned on it stays on.
    pub secrets_encryption: bool,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PKI could not be prepared.
    #[error("preparing certificates")]
    Pki(#[from] skiff_core::pki::Error),
    /// The join tokens are unusable.
    #[error("the join tokens")]
    Tokens(#[from] join::Error),
    /// The kubeconfig could not be written.
    #[error("writing the admin kubeconfig")]
    Kubeconfig(#[from] skiff_core::kubeconfig::Error),
    /// The datastore could not be opened.
    #[error("opening the datastore")]
    Store(#[source] store::Error),
    /// Secrets encryption could not be set up.
    #[error("secrets encryption")]
    Encryption(#[from] encryption::Error),
    /// TLS could not be configured.
    #[error("configuring TLS")]
    Tls(#[from] tls::Error),
    /// The port could not be bound.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating the default objects failed.
    #[error("creating the default objects: {0}")]
    Bootstrap(String),
    /// A loopback client for a component could not be built.
    #[error("building the {component}'s client")]
    Client {
        /// Which component.
        component: &'static str,
        /// The cause.
        #[source]
        source: skiff_core::client::Error,
    },
    /// The scheduler stopped with an error.
    #[error("scheduler failed")]
    Scheduler(#[from] scheduler::Error),
    /// The controller manager stopped with an error.
    #[error("controller manager failed")]
    Controllers(#[from] controllers::Error),
    /// A component stopped with an error.
    #[error("{component} failed")]
    Component {
        /// Which one.
        component: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }

    /// The address clients are told to use, and which the `kubernetes` Service leads to:
    /// `advertise_address`; else the address it is bound to; else, listening on every
    /// address, the in-process node's address, which pods can reach; else loopback.
    fn advertised(&self) -> IpAddr {
        advertised(
            self.advertise_address,
            self.bind_address,
            self.node.as_ref().map(|(_, ip)| *ip),
        )
    }
}

fn advertised(advertise: Option<IpAddr>, bind: IpAddr, node_ip: Option<IpAddr>) -> IpAddr {
    advertise.unwrap_or(match (bind, node_ip) {
        (a, Some(node_ip)) if a.is_unspecified() => node_ip,
        (a, None) if a.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        (a, _) => a,
    })
}

/// Where clients in this process reach an API listening on `bind`: that address, or
/// loopback when it listens on every address. A server bound to one address does not
/// listen on loopback.
fn loopback_url(bind: IpAddr, port: u16) -> String {
    match bind {
        a if a.is_unspecified() => format!("https://127.0.0.1:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
        a => format!("https://{a}:{port}"),
    }
}

/// Runs the control plane until `cancel` fires or a component fails.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    run_with_node(config, cancel, None).await
}

/// As [`run`]; once the API serves, sends `node` the credentials of the node in
/// [`Config::node`] (a loopback HTTPS client with its identity, and its API's serving
/// certificate), for the agent in this process.
pub async fn run_with_node(
    config: Config,
    cancel: CancellationToken,
    node: Option<tokio::sync::oneshot::Sender<skiff_core::client::NodeCredentials>>,
) -> Result<(), Error> {
    let dir = config.server_dir();
    let pki = tls::Pki::prepare(&config)?;
    let tokens = join::Tokens::prepare(
        &dir,
        &pki.ca,
        config.token.as_deref(),
        config.agent_token.as_deref(),
    )?;
    let mut backend = store::sqlite::Sqlite::open(&dir.join("db").join("state.db"))
        .map_err(|e| Error::Store(store::Error::Backend(e)))?;
    let encryption =
        encryption::Encryption::prepare(&dir, config.secrets_encryption)?.map(Arc::new);
    let store = match &encryption {
        Some(enc) => {
            if enc.is_new() {
                // Secrets deleted before this start may linger in freed pages.
                backend
                    .scrub()
                    .map_err(|e| Error::Store(store::Error::Backend(e)))?;
            }
            let mut backend = store::encrypted::Encrypted::new(backend, enc.keyring());
            // Secrets stored before encryption was turned on (or under an older key, if
            // a rotation was cut short) are sealed with the active key now, in place.
            let sealed = store::Backend::rewrite(
                &mut backend,
                store::encrypted::SECRETS_PREFIX,
                &mut |_| Ok(None),
            )
            .map_err(|e| Error::Store(store::Error::Backend(e)))?;
            if sealed > 0 {
                tracing::info!(
                    rows = sealed,
                    "secrets encryption: stored secrets re-encrypted"
                );
            }
            store::Store::open(backend, store::StoreConfig::default())
        }
        None => store::Store::open(backend, store::StoreConfig::default()),
    }
    .map_err(Error::Store)?;
    let addr = SocketAddr::new(config.bind_address, config.https_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let api = Arc::new(api::Api {
        store: store.clone(),
        allocator: api::allocator::Allocator {
            service_cidr: config.service_cidr,
            node_ports: config.service_node_port_range,
        },
        service_lock: tokio::sync::Mutex::new(()),
        server_address: SocketAddr::new(config.advertised(), config.https_port).to_string(),
        max_body: skiff_core::defaults::MAX_REQUEST_BYTES,
        kubelet_tls: pki.kubelet_client_config()?,
        ca_pem: pki.ca.pair.cert_pem.clone(),
        joining: join::Joining::new(
            &dir,
            skiff_core::pki::Ca::load_or_create(&dir.join("tls"))?,
            tokens,
            config.node.as_ref().map(|(name, _)| name.clone()),
        ),
        rbac: auth::rbac::Index::default(),
        sa_tokens: Arc::new(pki.service_account_tokens()?),
        encryption,
        network: skiff_core::join::ClusterNetwork {
            cluster_cidr: config.cluster_cidr.to_string(),
            service_cidr: config.service_cidr.to_string(),
            cluster_dns: config.cluster_dns.to_string(),
            cluster_domain: config.cluster_domain.clone(),
            backend: config.network_backend.clone(),
        },
    });
    bootstrap::ensure_defaults(&api, config.advertised(), config.https_port)
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?;
    // Authorization reads RBAC from memory: load it before the API serves.
    api.rbac.load(&api.store);
    // The kubeconfig is written last, so its presence means the server is ready to use.
    pki.write_admin_kubeconfig(&config)?;
    tracing::info!(%addr, kubeconfig = %config.write_kubeconfig.display(), "skiff server is ready");

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(controllers::namespace::run(api.clone(), cancel.clone()));
    tasks.spawn(join::clean_expired_tokens(api.clone(), cancel.clone()));
    tasks.spawn(auth::rbac::run(api.clone(), cancel.clone()));
    let serve_cancel = cancel.clone();
    let tls_config = pki.server_config.clone();
    let serving = api.clone();
    tasks.spawn(async move {
        api::serve(serving, tls_config, listener, serve_cancel)
            .await
            .map_err(|source| Error::Component {
                component: "api server",
                source,
            })
    });
    // The scheduler and the controllers are clients of the API like any other, over
    // loopback HTTPS with their own identities, as upstream's components are.
    let loopback = loopback_url(config.bind_address, config.https_port);
    if !config.disable_scheduler {
        let client = pki
            .component_client(&loopback, "scheduler")
            .await
            .map_err(|source| Error::Client {
                component: "scheduler",
                source,
            })?;
        let (cfg, c) = (config.scheduler.clone(), cancel.clone());
        tasks.spawn(async move { scheduler::run(client, cfg, c).await.map_err(Error::from) });
    }
    if !config.disable_controller_manager {
        let client = pki
            .component_client(&loopback, "controller-manager")
            .await
            .map_err(|source| Error::Client {
                component: "controller manager",
                source,
            })?;
        let (mut cfg, c) = (config.controllers.clone(), cancel.clone());
        cfg.root_ca_pem = pki.ca.pair.cert_pem.clone();
        cfg.service_account_tokens = Some(api.sa_tokens.clone());
        tasks.spawn(async move { controllers::run(client, cfg, c).await.map_err(Error::from) });
    }
    if let (Some((name, ip)), Some(node)) = (&config.node, node) {
        let client = pki
            .node_credentials(&loopback, name, &[*ip])
            .await
            .map_err(|source| Error::Client {
                component: "node",
                source,
            })?;
        // A dropped receiver means the agent is not waiting any more.
        let _ = node.send(client);
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "component failed; shutting down");
                result = Err(e);
                cancel.cancel();
            }
            // Aborted below, once shutting down: not a failure.
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                tracing::error!(error = %e, "component panicked; shutting down");
                cancel.cancel();
            }
        }
        if cancel.is_cancelled() {
            tasks.abort_all();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::{advertised, loopback_url};
    use std::net::IpAddr;

    #[test]
    fn the_advertised_address_is_one_pods_and_nodes_can_reach() {
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let at = |bind: &str, advertise: Option<&str>, node: Option<&str>| {
            advertised(advertise.map(ip), ip(bind), node.map(ip))
        };
        // Listening everywhere with a node in-process: the node's address, not loopback.
        assert_eq!(at("0.0.0.0", None, Some("10.0.0.5")), ip("10.0.0.5"));
        assert_eq!(at("0.0.0.0", None, None), ip("127.0.0.1"));
        assert_eq!(at("10.0.0.7", None, Some("10.0.0.5")), ip("10.0.0.7"));
        let set = at("0.0.0.0", Some("192.168.1.2"), Some("10.0.0.5"));
        assert_eq!(set, ip("192.168.1.2"));
    }

    #[test]
    fn components_reach_the_api_where_it_listens() {
        let url = |a: &str| loopback_url(a.parse::<IpAddr>().unwrap(), 6443);
        assert_eq!(url("0.0.0.0"), "https://127.0.0.1:6443");
        assert_eq!(url("::"), "https://127.0.0.1:6443");
        assert_eq!(url("10.213.0.10"), "https://10.213.0.10:6443");
        assert_eq!(url("127.0.0.1"), "https://127.0.0.1:6443");
        assert_eq!(url("fd00::1"), "https://[fd00::1]:6443");
    }
}
