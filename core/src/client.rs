//! Building Kubernetes API clients: from the pieces of a kubeconfig held in memory (the
//! server's own components over loopback) or from a kubeconfig file (tools).

use crate::kubeconfig::Kubeconfig;
use std::path::Path;

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be produced or read.
    #[error("kubeconfig")]
    Kubeconfig(#[from] crate::kubeconfig::Error),
    /// kube refused the configuration.
    #[error("client configuration")]
    Config(#[from] kube::config::KubeconfigError),
    /// The client could not be built.
    #[error("building the client")]
    Client(#[from] kube::Error),
    /// The client certificate could not be issued.
    #[error("issuing the client certificate")]
    Certificate(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A client for `server` that authenticates with a client certificate.
pub async fn from_cert(
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    name: &str,
) -> Result<kube::Client, Error> {
    let yaml = Kubeconfig {
        server,
        ca_pem,
        client_cert_pem: cert_pem,
        client_key_pem: key_pem,
        name,
    }
    .to_yaml()?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// A client from a kubeconfig file.
pub async fn from_file(path: &Path) -> Result<kube::Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// What a node needs from the cluster: an API client with its identity
/// (`system:node:<name>`), the CA, and the certificate its own API serves with.
pub struct NodeCredentials {
    /// The API client.
    pub client: kube::Client,
    /// The cluster CA (PEM), which the node's API trusts for its clients.
    pub ca_pem: String,
    /// The node API's serving certificate and key.
    pub serving: crate::pki::CertPair,
}

/// The common name of the API server's client certificate towards nodes; the node's API
/// lets in no one else.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
