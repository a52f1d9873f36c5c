//! Defaults shared by every role: ports, paths and network ranges.
//!
//! They match K3s's so that its users' habits and firewall rules carry over.

/// The API server's HTTPS port.
pub const HTTPS_PORT: u16 = 6443;
/// The root of everything skiff keeps on disk.
pub const DATA_DIR: &str = "/var/lib/skiff";
/// Where the admin kubeconfig is written.
pub const KUBECONFIG_PATH: &str = "/etc/skiff/skiff.yaml";
/// The configuration file read by `skiff server` and `skiff agent`.
pub const CONFIG_PATH: &str = "/etc/skiff/config.yaml";
/// The pod network.
pub const CLUSTER_CIDR: &str = "10.42.0.0/16";
/// The Service network; its first address is the `kubernetes` Service.
pub const SERVICE_CIDR: &str = "10.43.0.0/16";
/// The NodePort range.
pub const SERVICE_NODE_PORT_RANGE: &str = "30000-32767";
/// The cluster DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The Kubernetes version skiff serves the API of.
pub const KUBERNETES_VERSION: &str = "v1.37.0";
/// The largest request body accepted, as etcd's default request limit.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;
/// The container runtime's name in container IDs (`skiff://<id>`) and in a node's
/// `containerRuntimeVersion` (`skiff://<version>`).
pub const RUNTIME_NAME: &str = "skiff";
/// Where the kubelet writes container logs.
pub const POD_LOG_DIR: &str = "/var/log/pods";
/// Pods a node runs at most, as upstream's kubelet default.
pub const MAX_PODS: u32 = 110;
/// Registry mirrors and credentials (K3s's registries.yaml format).
pub const REGISTRIES_PATH: &str = "/etc/skiff/registries.yaml";
