//! Writing kubeconfig files that real kubectl, kube-rs and the Python client read.

use base64::Engine;
use serde::Serialize;
use std::path::Path;

/// Errors writing a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The YAML could not be produced.
    #[error("encoding kubeconfig")]
    Encode(#[source] serde_yaml_ng::Error),
    /// The file could not be written.
    #[error("writing kubeconfig {path}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a kubeconfig with one cluster, one user and one context says.
#[derive(Debug, Clone)]
pub struct Kubeconfig<'a> {
    /// The API server URL, e.g. `https://127.0.0.1:6443`.
    pub server: &'a str,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_pem: &'a str,
    /// The client certificate (PEM).
    pub client_cert_pem: &'a str,
    /// The client key (PEM).
    pub client_key_pem: &'a str,
    /// The name of the cluster, user and context entries.
    pub name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct File<'a> {
    api_version: &'a str,
    kind: &'a str,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry<'a>>>,
    current_context: &'a str,
    preferences: serde_yaml_ng::Mapping,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    inner: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: Cluster,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    certificate_authority_data: String,
    server: String,
}

#[derive(Serialize)]
struct UserEntry {
    user: User,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    context: Context<'a>,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
}

impl Kubeconfig<'_> {
    /// The kubeconfig as YAML.
    pub fn to_yaml(&self) -> Result<String, Error> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let file = File {
            api_version: "v1",
            kind: "Config",
            clusters: vec![Named {
                name: self.name.to_string(),
                inner: ClusterEntry {
                    cluster: Cluster {
                        certificate_authority_data: b64(self.ca_pem),
                        server: self.server.to_string(),
                    },
                },
            }],
            users: vec![Named {
                name: self.name.to_string(),
                inner: UserEntry {
                    user: User {
                        client_certificate_data: b64(self.client_cert_pem),
                        client_key_data: b64(self.client_key_pem),
                    },
                },
            }],
            contexts: vec![Named {
                name: self.name.to_string(),
                inner: ContextEntry {
                    context: Context {
                        cluster: self.name,
                        user: self.name,
                    },
                },
            }],
            current_context: self.name,
            preferences: serde_yaml_ng::Mapping::new(),
        };
        serde_yaml_ng::to_string(&file).map_err(Error::Encode)
    }

    /// Writes the kubeconfig to `path` with the given file mode, creating parent folders.
    /// The file is written to a temporary name and renamed, so a reader never sees half of it.
    pub fn write(&self, path: &Path, mode: u32) -> Result<(), Error> {
        let yaml = self.to_yaml()?;
        crate::pki::write_file_atomic(path, yaml.as_bytes(), mode).map_err(|source| Error::Write {
            path: path.display().to_string(),
            source,
        })
    }
}
