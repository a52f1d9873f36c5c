//! The join exchange between `skiff agent` and a server, shared by both sides.
//!
//! The agent first fetches the CA from [`CACERTS_PATH`] without trusting it and checks
//! it against its token's hash. Then it posts a [`JoinRequest`] to [`JOIN_PATH`] over
//! TLS verified by that CA, authenticated by its token (HTTP basic `<user>:<secret>`, or
//! `Bearer <id>.<secret>` for a bootstrap token), and gets a [`JoinResponse`]: its client
//! certificate (`system:node:<name>` in `system:nodes`) and the serving certificate of
//! its own API.

use serde::{Deserialize, Serialize};

/// Where the CA is served, to anyone.
pub const CACERTS_PATH: &str = "/cacerts";
/// Where agents join.
pub const JOIN_PATH: &str = "/v1-skiff/join";

/// Where an admin replaces the server token (`skiff token rotate`).
pub const TOKEN_ROTATE_PATH: &str = "/v1-skiff/token/rotate";

/// What a joining agent sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The node's name.
    pub name: String,
    /// The node's addresses, for its serving certificate.
    pub addresses: Vec<std::net::IpAddr>,
    /// The node password, which proves this is the machine that first took the name.
    pub password: String,
}

/// What the server answers.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The cluster CA (PEM).
    pub ca: String,
    /// The node's client certificate (PEM).
    pub client_cert: String,
    /// Its key (PEM).
    pub client_key: String,
    /// The node API's serving certificate (PEM).
    pub serving_cert: String,
    /// Its key (PEM).
    pub serving_key: String,
}

// Keys never reach logs.
impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse").finish_non_exhaustive()
    }
}

/// The user name of node `name`.
pub fn node_user(name: &str) -> String {
    format!("system:node:{name}")
}

/// The group of every node.
pub const NODES_GROUP: &str = "system:nodes";

/// Where a node reads the cluster's network settings (any node or cluster admin).
pub const NETWORK_PATH: &str = "/v1-skiff/network";

/// The cluster's network settings, which every node's network follows; the server's
/// flags decide them and agents read them at [`NETWORK_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetwork {
    /// All pods' addresses (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// All Services' cluster addresses (`--service-cidr`).
    pub service_cidr: String,
    /// The cluster DNS address (`--cluster-dns`).
    pub cluster_dns: String,
    /// The cluster's DNS domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// How nodes reach each other's pods (`--network-backend`: vxlan, host-gw, none).
    pub backend: String,
}
