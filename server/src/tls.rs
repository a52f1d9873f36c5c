//! The server's certificates and TLS configuration.

use crate::Config;
use skiff_core::kubeconfig::Kubeconfig;
use skiff_core::pki::{Ca, CertPair, Usage};
use std::net::IpAddr;
use std::sync::Arc;

/// Errors configuring TLS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PKI failed.
    #[error(transparent)]
    Pki(#[from] skiff_core::pki::Error),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] skiff_core::tls::Error),
    /// The ServiceAccount token signing key is unusable.
    #[error("the service account signing key {path}")]
    SigningKey {
        /// The key file.
        path: String,
        /// The cause.
        #[source]
        source: crate::auth::jwt::Error,
    },
}

/// The server's PKI: CA, serving certificate, admin client certificate.
pub struct Pki {
    /// The cluster CA.
    pub ca: Ca,
    /// The admin client certificate.
    pub admin: CertPair,
    /// The TLS configuration of the API server.
    pub server_config: Arc<rustls::ServerConfig>,
    /// Where the certificates live.
    dir: std::path::PathBuf,
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
}

/// The serving certificate's SANs: the host name, loopback, the `kubernetes` Service
/// names and address, the node's addresses and every `--tls-san`.
pub fn server_sans(config: &Config) -> Vec<String> {
    let mut sans: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !s.is_empty() && !sans.contains(&s) {
            sans.push(s);
        }
    };
    if let Some(h) = hostname() {
        add(h);
    }
    for s in [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        add(s.to_string());
    }
    let first = u32::from(config.service_cidr.network()) + 1;
    add(std::net::Ipv4Addr::from(first).to_string());
    if !config.bind_address.is_unspecified() {
        add(config.bind_address.to_string());
    }
    if let Some(a) = config.advertise_address {
        add(a.to_string());
    }
    if let Some((_, node_ip)) = &config.node {
        add(node_ip.to_string());
    }
    for ip in local_addresses() {
        add(ip.to_string());
    }
    for s in &config.tls_sans {
        add(s.clone());
    }
    sans
}

/// The host's IPv4 addresses, from /proc (no extra dependency, no netlink needed here).
fn local_addresses() -> Vec<IpAddr> {
    // /proc/net/fib_trie lists local addresses as "/32 host LOCAL" entries.
    let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut last: Option<IpAddr> = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '-', '+']);
        if let Ok(ip) = t.trim().parse::<IpAddr>() {
            last = Some(ip);
        } else if t.contains("/32 host LOCAL") {
            if let Some(ip) = last {
                if !ip.is_loopback() && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

impl Pki {
    /// Loads or creates the CA and certificates under `<data-dir>/server/tls`.
    pub fn prepare(config: &Config) -> Result<Pki, Error> {
        let dir = config.data_dir.join("server").join("tls");
        let ca = Ca::load_or_create(&dir)?;
        let serving = ca.load_or_issue(
            &dir,
            "serving-kube-apiserver",
            &Usage::Server {
                sans: server_sans(config),
            },
        )?;
        let admin = ca.load_or_issue(
            &dir,
            "client-admin",
            &Usage::Client {
                user: "system:admin".into(),
                groups: vec!["system:masters".into()],
            },
        )?;
        let server_config = skiff_core::tls::server_config(
            &ca.pair.cert_pem,
            &serving,
            skiff_core::tls::ClientAuth::Optional,
        )?;
        Ok(Pki {
            ca,
            admin,
            server_config,
            dir,
        })
    }

    /// A loopback client for one of the server's own components, with a client
    /// certificate naming it as upstream's components are named
    /// (`system:kube-scheduler`, `system:kube-controller-manager`).
    pub async fn component_client(
        &self,
        server: &str,
        component: &str,
    ) -> Result<kube::Client, skiff_core::client::Error> {
        let user = format!("system:kube-{component}");
        let dir = self.dir.clone();
        let pair = self
            .ca
            .load_or_issue(
                &dir,
                &format!("client-{component}"),
                &Usage::Client {
                    user: user.clone(),
                    groups: Vec::new(),
                },
            )
            .map_err(|e| skiff_core::client::Error::Certificate(Box::new(e)))?;
        skiff_core::client::from_cert(
            server,
            &self.ca.pair.cert_pem,
            &pair.cert_pem,
            &pair.key_pem,
            &user,
        )
        .await
    }

    /// The credentials of the node in this process: a loopback client as
    /// `system:node:<name>` in group `system:nodes` (as a joined agent's certificate will
    /// name it) and a serving certificate for its API at `addresses`.
    pub async fn node_credentials(
        &self,
        server: &str,
        name: &str,
        addresses: &[IpAddr],
    ) -> Result<skiff_core::client::NodeCredentials, skiff_core::client::Error> {
        let user = format!("system:node:{name}");
        let cert_err = |e| skiff_core::client::Error::Certificate(Box::new(e));
        let pair = self
            .ca
            .load_or_issue(
                &self.dir,
                &format!("client-node-{name}"),
                &Usage::Client {
                    user: user.clone(),
                    groups: vec!["system:nodes".to_string()],
                },
            )
            .map_err(cert_err)?;
        let mut sans = vec![name.to_string(), "localhost".into(), "127.0.0.1".into()];
        sans.extend(addresses.iter().map(|a| a.to_string()));
        let serving = self
            .ca
            .load_or_issue(
                &self.dir,
                &format!("serving-node-{name}"),
                &Usage::Server { sans },
            )
            .map_err(cert_err)?;
        let client = skiff_core::client::from_cert(
            server,
            &self.ca.pair.cert_pem,
            &pair.cert_pem,
            &pair.key_pem,
            &user,
        )
        .await?;
        Ok(skiff_core::client::NodeCredentials {
            client,
            ca_pem: self.ca.pair.cert_pem.clone(),
            serving,
        })
    }

    /// The ServiceAccount token issuer: signs with `service.key` (made on first start,
    /// mode 0600, kept), accepts the API audiences.
    pub fn service_account_tokens(
        &self,
    ) -> Result<crate::auth::authn::ServiceAccountTokens, Error> {
        let path = self.dir.join("service.key");
        let der = skiff_core::pki::load_or_create_key(&path)?;
        let signer =
            crate::auth::jwt::Signer::from_pkcs8(&der).map_err(|source| Error::SigningKey {
                path: path.display().to_string(),
                source,
            })?;
        Ok(crate::auth::authn::ServiceAccountTokens::new(
            signer,
            crate::auth::jwt::API_AUDIENCES
                .iter()
                .map(|a| a.to_string())
                .collect(),
        ))
    }

    /// The TLS client the API server reaches nodes' APIs with.
    pub fn kubelet_client_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let pair = self.ca.load_or_issue(
            &self.dir,
            "client-kube-apiserver-kubelet",
            &Usage::Client {
                user: skiff_core::client::KUBELET_CLIENT_USER.to_string(),
                groups: vec!["system:masters".to_string()],
            },
        )?;
        Ok(skiff_core::tls::client_config(
            &self.ca.pair.cert_pem,
            &pair,
        )?)
    }

    /// Writes the admin kubeconfig.
    pub fn write_admin_kubeconfig(
        &self,
        config: &Config,
    ) -> Result<(), skiff_core::kubeconfig::Error> {
        let host = match config.bind_address {
            a if a.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        let server = format!("https://{host}:{}", config.https_port);
        Kubeconfig {
            server: &server,
            ca_pem: &self.ca.pair.cert_pem,
            client_cert_pem: &self.admin.cert_pem,
            client_key_pem: &self.admin.key_pem,
            name: "default",
        }
        .write(&config.write_kubeconfig, config.write_kubeconfig_mode)
    }
}
