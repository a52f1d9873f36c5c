//! `skiff agent`: join a server with a token, then run the node.
//!
//! [`run`] settles the node's identity and runs the kubelet with it, again whenever the
//! certificates come within 90 days of expiry. The identity is kept in
//! `<data-dir>/agent/tls/` (the CA, the client certificate `system:node:<name>`, the
//! serving certificate of the node's API), so a restarted agent is the same node even
//! while the server is down. Without one (or with one that no longer fits), the agent
//! joins:
//!
//! 1. it fetches the CA from `/cacerts` without trusting it, and refuses it unless its
//!    SHA-256 is the hash in the token (a short token has none: the agent says loudly
//!    that it cannot check);
//! 2. it posts its name, addresses and node password to `/v1-skiff/join` over TLS
//!    verified by that CA, authenticated by the token, and gets its certificates.
//!
//! The node password (`<data-dir>/agent/node-password`, made on first start) is what
//! stops another machine from taking this node's name. A server that cannot be reached,
//! or answers 5xx, is tried again with back-off; a refused token, a CA that does not
//! match, or a taken name stop the agent with the reason.

use crate::kubelet;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use skiff_core::client::NodeCredentials;
use skiff_core::join::{JoinRequest, JoinResponse, CACERTS_PATH, JOIN_PATH, NODES_GROUP};
use skiff_core::pki::{write_file_atomic, CertPair, Usage};
use skiff_core::token::{ca_hash, Token};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How the agent joins.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server, `https://host:port`.
    pub server: String,
    /// The join token.
    pub token: Token,
    /// skiff's data folder.
    pub data_dir: PathBuf,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused to let this node join; trying again will not help.
    #[error("the server refused to let this node join: {0}")]
    Refused(String),
    /// The CA the server presents is not the one the token names.
    #[error(
        "the server's CA (sha256 {got}) is not the one the token names ({want}): the token is for another cluster, or something between this machine and the server is presenting its own certificate; refusing to join"
    )]
    WrongCa {
        /// The CA's hash.
        got: String,
        /// The token's hash.
        want: String,
    },
    /// The node's files could not be read or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The credentials could not be turned into a client.
    #[error("building the node's API client")]
    Client(#[from] skiff_core::client::Error),
    /// The node stopped with an error.
    #[error("the node failed")]
    Kubelet(#[from] kubelet::Error),
}

/// Parses `--server`: `https://host[:port]` (port 6443 when left out).
pub fn parse_server_url(text: &str) -> Result<String, String> {
    let uri: http::Uri = text
        .trim()
        .parse()
        .map_err(|_| "not a URL such as https://192.168.1.10:6443".to_string())?;
    if uri.scheme_str() != Some("https") {
        return Err("the URL must start with https://".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    if !matches!(uri.path(), "" | "/") {
        return Err("the URL must not have a path".into());
    }
    let port = uri.port_u16().unwrap_or(skiff_core::defaults::HTTPS_PORT);
    Ok(format!("https://{host}:{port}"))
}

/// Joins (or reuses the identity kept from an earlier join) and runs the node until
/// `cancel` fires, renewing the certificates when they near expiry.
pub async fn run(
    join: Config,
    node: kubelet::Config,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let addresses = vec![node.node_ip];
    loop {
        let Some(identity) = identity(&join, &node.node_name, &addresses, &cancel).await? else {
            return Ok(());
        };
        let renew_in = renewal_delay(&identity);
        let creds = NodeCredentials {
            client: skiff_core::client::from_cert(
                &join.server,
                &identity.ca,
                &identity.client.cert_pem,
                &identity.client.key_pem,
                &skiff_core::join::node_user(&node.node_name),
            )
            .await?,
            ca_pem: identity.ca.clone(),
            serving: identity.serving.clone(),
        };
        let Some(cluster) = cluster_network(&creds.client, &join.data_dir, &cancel).await else {
            return Ok(());
        };
        let mut node = node.clone();
        apply_cluster_network(&mut node.network, &cluster);
        let run_cancel = cancel.child_token();
        let timer = run_cancel.clone();
        let renewal = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(renew_in) => {
                    tracing::info!("the node's certificates near expiry; renewing them");
                    timer.cancel();
                }
                _ = timer.cancelled() => {}
            }
        });
        let result = kubelet::run(creds, node.clone(), run_cancel.clone()).await;
        run_cancel.cancel();
        renewal.abort();
        result?;
        if cancel.is_cancelled() {
            return Ok(());
        }
        // Renewal: forget the old certificates so the next round joins again.
        remove_identity(&join.data_dir);
    }
}

/// A node's certificates.
#[derive(Clone)]
pub struct Identity {
    /// The cluster CA (PEM).
    pub ca: String,
    /// The client certificate.
    pub client: CertPair,
    /// The node API's serving certificate.
    pub serving: CertPair,
}

fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("tls")
}

const FILES: [&str; 5] = [
    "ca.crt",
    "client-node.crt",
    "client-node.key",
    "serving-node.crt",
    "serving-node.key",
];

/// Forgets the node's certificates (not its password), so the next start joins again:
/// `skiff certificate rotate` and renewal.
pub fn remove_identity(data_dir: &Path) -> usize {
    let dir = tls_dir(data_dir);
    FILES
        .iter()
        .filter(|f| std::fs::remove_file(dir.join(f)).is_ok())
        .count()
}

fn client_usage(name: &str) -> Usage {
    Usage::Client {
        user: skiff_core::join::node_user(name),
        groups: vec![NODES_GROUP.to_string()],
    }
}

fn serving_usage(name: &str, addresses: &[IpAddr]) -> Usage {
    let mut sans = vec![name.to_string()];
    sans.extend(addresses.iter().map(|a| a.to_string()));
    Usage::Server { sans }
}

/// The identity kept from an earlier join, if it is for this node, this token's CA and
/// these addresses, and is not near expiry.
fn stored_identity(join: &Config, name: &str, addresses: &[IpAddr]) -> Option<Identity> {
    let dir = tls_dir(&join.data_dir);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let identity = Identity {
        ca: read("ca.crt")?,
        client: CertPair {
            cert_pem: read("client-node.crt")?,
            key_pem: read("client-node.key")?,
        },
        serving: CertPair {
            cert_pem: read("serving-node.crt")?,
            key_pem: read("serving-node.key")?,
        },
    };
    let ca_ok = join
        .token
        .ca_hash
        .as_ref()
        .is_none_or(|want| *want == ca_hash(&identity.ca));
    let fits = ca_ok
        && skiff_core::pki::fits(&identity.client.cert_pem, &client_usage(name))
        && skiff_core::pki::fits(&identity.serving.cert_pem, &serving_usage(name, addresses));
    fits.then_some(identity)
}

fn store_identity(data_dir: &Path, identity: &Identity) -> Result<(), Error> {
    let dir = tls_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let files = [
        ("ca.crt", &identity.ca, 0o644),
        ("client-node.key", &identity.client.key_pem, 0o600),
        ("client-node.crt", &identity.client.cert_pem, 0o644),
        ("serving-node.key", &identity.serving.key_pem, 0o600),
        ("serving-node.crt", &identity.serving.cert_pem, 0o644),
    ];
    for (name, text, mode) in files {
        let path = dir.join(name);
        write_file_atomic(&path, text.as_bytes(), mode).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

/// How long until the certificates are 90 days from expiry (at least a minute).
fn renewal_delay(identity: &Identity) -> Duration {
    let now = jiff::Timestamp::now().as_second();
    let first = [&identity.client.cert_pem, &identity.serving.cert_pem]
        .iter()
        .filter_map(|pem| skiff_core::pki::expires_at(pem))
        .min()
        .unwrap_or(now);
    let secs = first - skiff_core::pki::RENEW_BEFORE_SECS - now;
    Duration::from_secs(secs.max(60) as u64)
}

/// The node password, made on first start.
fn node_password(data_dir: &Path) -> Result<String, Error> {
    let path = data_dir.join("agent").join("node-password");
    match std::fs::read_to_string(&path) {
        Ok(p) if p.trim().len() >= 16 => return Ok(p.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        }
    }
    let password = skiff_core::token::new_secret();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            what: format!("creating {}", parent.display()),
            source,
        })?;
    }
    write_file_atomic(&path, format!("{password}\n").as_bytes(), 0o600).map_err(|source| {
        Error::Io {
            what: format!("writing {}", path.display()),
            source,
        }
    })?;
    Ok(password)
}

/// The node's identity: the one kept, or a new one from joining. `None` when cancelled.
pub async fn identity(
    join: &Config,
    name: &str,
    addresses: &[IpAddr],
    cancel: &CancellationToken,
) -> Result<Option<Identity>, Error> {
    if let Some(kept) = stored_identity(join, name, addresses) {
        tracing::info!(
            node = name,
            "using the node's certificates from its last join"
        );
        return Ok(Some(kept));
    }
    if join.token.ca_hash.is_none() {
        tracing::warn!(
            "THE TOKEN HAS NO CA HASH: this agent cannot check that it talks to the right server. \
             Use the whole token from the server's <data-dir>/server/token (K10<hash>::...)"
        );
    }
    let password = node_password(&join.data_dir)?;
    let request = JoinRequest {
        name: name.to_string(),
        addresses: addresses.to_vec(),
        password,
    };
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = tokio::select! {
            r = join_once(join, &request) => r,
            _ = cancel.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(identity) => {
                store_identity(&join.data_dir, &identity)?;
                tracing::info!(node = name, server = %join.server, "joined the cluster");
                return Ok(Some(identity));
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(why)) => {
                tracing::warn!(server = %join.server, error = %why, retry_in_ms = delay.as_millis() as u64, "cannot join yet");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// How one attempt failed.
enum Attempt {
    /// Worth trying again (the server is down or busy).
    Retry(String),
    /// Not worth it.
    Fatal(Error),
}

async fn join_once(join: &Config, request: &JoinRequest) -> Result<Identity, Attempt> {
    let tls = |r: Result<Arc<rustls::ClientConfig>, skiff_core::tls::Error>| {
        r.map_err(|e| Attempt::Fatal(Error::Refused(format!("TLS configuration: {e}"))))
    };
    // 1. The CA, untrusted until its hash is checked.
    let (status, ca) = call(
        &join.server,
        tls(skiff_core::tls::unverified_client_config())?,
        http::Method::GET,
        CACERTS_PATH,
        None,
        Bytes::new(),
    )
    .await?;
    if status != 200 {
        return Err(Attempt::Retry(format!("{CACERTS_PATH} answered {status}")));
    }
    let ca = String::from_utf8(ca.to_vec())
        .map_err(|_| Attempt::Retry(format!("{CACERTS_PATH} is not text")))?;
    let got = ca_hash(&ca);
    if let Some(want) = &join.token.ca_hash {
        if *want != got {
            return Err(Attempt::Fatal(Error::WrongCa {
                got,
                want: want.clone(),
            }));
        }
    }
    // 2. The join, over TLS verified by that CA.
    let authorization = if join.token.bootstrap {
        format!("Bearer {}", join.token.credentials())
    } else {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(join.token.credentials())
        )
    };
    let body = serde_json::to_vec(request)
        .map_err(|e| Attempt::Fatal(Error::Refused(format!("encoding the request: {e}"))))?;
    let (status, answer) = call(
        &join.server,
        tls(skiff_core::tls::anonymous_client_config(&ca))?,
        http::Method::POST,
        JOIN_PATH,
        Some(&authorization),
        Bytes::from(body),
    )
    .await?;
    if status >= 500 {
        return Err(Attempt::Retry(format!("the server answered {status}")));
    }
    if status != 200 {
        // A Kubernetes Status: its message says why.
        let message = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
        return Err(Attempt::Fatal(Error::Refused(format!(
            "{message} (HTTP {status})"
        ))));
    }
    let issued: JoinResponse = serde_json::from_slice(&answer)
        .map_err(|e| Attempt::Retry(format!("the join response does not parse: {e}")))?;
    if ca_hash(&issued.ca) != got {
        return Err(Attempt::Fatal(Error::Refused(
            "the server answered with another CA than it presents".into(),
        )));
    }
    Ok(Identity {
        ca: issued.ca,
        client: CertPair {
            cert_pem: issued.client_cert,
            key_pem: issued.client_key,
        },
        serving: CertPair {
            cert_pem: issued.serving_cert,
            key_pem: issued.serving_key,
        },
    })
}

/// One HTTPS request to the server: its status and body.
async fn call(
    server: &str,
    tls: Arc<rustls::ClientConfig>,
    method: http::Method,
    path: &str,
    authorization: Option<&str>,
    body: Bytes,
) -> Result<(u16, Bytes), Attempt> {
    let uri: http::Uri = server
        .parse()
        .map_err(|_| Attempt::Fatal(Error::Refused(format!("bad server URL {server}"))))?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(skiff_core::defaults::HTTPS_PORT);
    let retry = |what: &str, e: &dyn std::fmt::Display| Attempt::Retry(format!("{what}: {e}"));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| retry(&format!("connecting to {host}:{port}"), &e))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Attempt::Fatal(Error::Refused(format!("server name {host}: {e}"))))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| retry("TLS handshake", &e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| retry("HTTP handshake", &e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Attempt::Fatal(Error::Refused(format!("building the request: {e}"))))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| retry("sending the request", &e))?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), 1024 * 1024)
            .collect()
            .await
            .map_err(|e| retry("reading the answer", &e))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| Attempt::Retry("the server did not answer within 15 s".into()))?
}

/// The cluster's network settings, from the server, kept in the data dir so that a node
/// restarted while its server is down still knows them. `None` once `cancel` fires.
async fn cluster_network(
    client: &kube::Client,
    data_dir: &std::path::Path,
    cancel: &CancellationToken,
) -> Option<skiff_core::join::ClusterNetwork> {
    let kept = data_dir.join("agent").join("network").join("cluster.json");
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        let req = http::Request::get(skiff_core::join::NETWORK_PATH).body(Vec::new());
        let fetched = match req {
            Ok(req) => client
                .request::<skiff_core::join::ClusterNetwork>(req)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match fetched {
            Ok(n) => {
                if let Ok(bytes) = serde_json::to_vec(&n) {
                    let _ = kept.parent().map(std::fs::create_dir_all);
                    if let Err(e) = std::fs::write(&kept, bytes) {
                        tracing::warn!(path = %kept.display(), error = %e, "keeping the cluster's network settings");
                    }
                }
                return Some(n);
            }
            Err(e) => {
                if let Some(n) = std::fs::read(&kept)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                {
                    tracing::warn!(error = %e, "reading the cluster's network settings failed; using the kept ones");
                    return Some(n);
                }
                tracing::warn!(error = %e, retry_in = ?pause, "reading the cluster's network settings failed; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return None,
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
    }
}

/// Puts the cluster's settings into the node's network configuration; a value that does
/// not parse keeps the default (and is logged).
pub fn apply_cluster_network(
    config: &mut crate::network::Config,
    cluster: &skiff_core::join::ClusterNetwork,
) {
    let warn = |what: &str, v: &str| {
        tracing::warn!(
            setting = what,
            value = v,
            "the server sent a network setting that does not parse; using the default"
        )
    };
    match cluster.cluster_cidr.parse() {
        Ok(v) => config.cluster_cidr = v,
        Err(_) => warn("clusterCIDR", &cluster.cluster_cidr),
    }
    match cluster.service_cidr.parse() {
        Ok(v) => config.service_cidr = v,
        Err(_) => warn("serviceCIDR", &cluster.service_cidr),
    }
    match cluster.cluster_dns.parse() {
        Ok(v) => config.cluster_dns = v,
        Err(_) => warn("clusterDNS", &cluster.cluster_dns),
    }
    config.cluster_domain = cluster.cluster_domain.clone();
    match crate::network::Backend::parse(&cluster.backend) {
        Some(b) => config.backend = b,
        None => warn("backend", &cluster.backend),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_server_url("https://10.0.0.1").unwrap(),
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            parse_server_url("https://pi.local:7443/").unwrap(),
            "https://pi.local:7443"
        );
        assert!(parse_server_url("http://10.0.0.1:6443").is_err());
        assert!(parse_server_url("10.0.0.1:6443").is_err());
        assert!(parse_server_url("https://10.0.0.1:6443/x").is_err());
    }
}
