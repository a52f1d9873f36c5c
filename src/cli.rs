//! Command-line flags. Only parsing lives here; what the flags do lives in the crates.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// skiff: a single-binary Kubernetes for the edge.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane and a node on this machine.
    Server(Box<ServerArgs>),
    /// Run a node that joins a server.
    Agent(Box<AgentArgs>),
    /// Manage bootstrap tokens, and rotate the server token.
    Token(TokenArgs),
    /// Manage this machine's certificates.
    Certificate(CertificateArgs),
    /// Manage the node's images: import tarballs, list, remove, prune.
    Images(ImagesArgs),
    /// Stop every container this node runs and unmount what it mounted (data stays)
    Killall {
        /// Folder holding state [default: /var/lib/skiff]
        #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run a process in a running container (the node runs these; not for users).
    #[command(hide = true)]
    ContainerExec {
        /// The container's folder.
        dir: PathBuf,
        /// Run it on a terminal.
        #[arg(long)]
        tty: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Run one container under its shim (the agent starts these; not for users).
    #[command(hide = true)]
    Shim {
        /// The container's folder.
        dir: PathBuf,
    },
    /// Register simulated nodes that run no containers but move their pods through
    /// their lifecycle (for testing and measuring the control plane at scale).
    SimNodes(SimNodesArgs),
    /// Show or rotate the keys Secrets are encrypted with at rest (`--secrets-encryption`).
    SecretsEncrypt(SecretsEncryptArgs),
    /// Run kubectl (found on PATH) against this server with the admin kubeconfig.
    #[command(disable_help_flag = true)]
    Kubectl {
        /// Arguments passed to kubectl as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Flags of `skiff server`, named as K3s names them. Every flag can also come from a
/// `SKIFF_*` environment variable or a key of the config file; flags win over the
/// environment, which wins over the file.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Config file (YAML whose keys are the flag names) [default: /etc/skiff/config.yaml]
    #[arg(long, short = 'c', env = "SKIFF_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// Folder to hold state [default: /var/lib/skiff]
    #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0]
    #[arg(long, env = "SKIFF_BIND_ADDRESS")]
    pub bind_address: Option<String>,
    /// HTTPS port of the API server [default: 6443]
    #[arg(long, env = "SKIFF_HTTPS_LISTEN_PORT")]
    pub https_listen_port: Option<u16>,
    /// Address other hosts reach this server at [default: the bind address, or 127.0.0.1]
    #[arg(long, env = "SKIFF_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// Extra host name or address in the serving certificate (repeatable)
    #[arg(long = "tls-san", env = "SKIFF_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Where to write the admin kubeconfig [default: /etc/skiff/skiff.yaml]
    #[arg(long, short = 'o', env = "SKIFF_WRITE_KUBECONFIG")]
    pub write_kubeconfig: Option<PathBuf>,
    /// File mode of the admin kubeconfig, octal [default: 0600]
    #[arg(long, env = "SKIFF_WRITE_KUBECONFIG_MODE")]
    pub write_kubeconfig_mode: Option<String>,
    /// Service network [default: 10.43.0.0/16]
    #[arg(long, env = "SKIFF_SERVICE_CIDR")]
    pub service_cidr: Option<String>,
    /// Pod network [default: 10.42.0.0/16]
    #[arg(long, env = "SKIFF_CLUSTER_CIDR")]
    pub cluster_cidr: Option<String>,
    /// Cluster DNS address given to pods [default: the 10th address of the service network, 10.43.0.10]
    #[arg(long, env = "SKIFF_CLUSTER_DNS")]
    pub cluster_dns: Option<String>,
    /// Cluster DNS domain [default: cluster.local]
    #[arg(long, env = "SKIFF_CLUSTER_DOMAIN")]
    pub cluster_domain: Option<String>,
    /// How nodes reach each other's pods: vxlan, host-gw (nodes on one L2 segment) or none [default: vxlan]
    #[arg(long, env = "SKIFF_NETWORK_BACKEND")]
    pub network_backend: Option<String>,
    /// NodePort range [default: 30000-32767]
    #[arg(long, env = "SKIFF_SERVICE_NODE_PORT_RANGE")]
    pub service_node_port_range: Option<String>,
    /// Shared secret other machines join with (the secret, or a whole K10 token) [default: kept, or made on first start]
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// File holding the token
    #[arg(long, env = "SKIFF_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Shared secret that can only join agents
    #[arg(long, env = "SKIFF_AGENT_TOKEN")]
    pub agent_token: Option<String>,
    /// File holding the agent token
    #[arg(long, env = "SKIFF_AGENT_TOKEN_FILE", conflicts_with = "agent_token")]
    pub agent_token_file: Option<PathBuf>,
    /// Do not run a node in this process
    #[arg(long, env = "SKIFF_DISABLE_AGENT", num_args = 0..=1, default_missing_value = "true")]
    pub disable_agent: Option<bool>,
    /// Do not run the scheduler
    #[arg(long, env = "SKIFF_DISABLE_SCHEDULER", num_args = 0..=1, default_missing_value = "true")]
    pub disable_scheduler: Option<bool>,
    /// Do not run the controllers
    #[arg(long, env = "SKIFF_DISABLE_CONTROLLER_MANAGER", num_args = 0..=1, default_missing_value = "true")]
    pub disable_controller_manager: Option<bool>,
    /// Scheduler scoring: least-allocated spreads load, binpack fills nodes first [default: least-allocated]
    #[arg(long, env = "SKIFF_SCHEDULER_STRATEGY")]
    pub scheduler_strategy: Option<String>,
    /// Seconds a node's lease may go unrenewed before the node is marked NotReady [default: 40]
    #[arg(long, env = "SKIFF_NODE_MONITOR_GRACE_PERIOD")]
    pub node_monitor_grace_period: Option<u64>,
    /// Log filter (tracing's syntax, e.g. "info,skiff_server=debug") [default: info]
    #[arg(long, env = "SKIFF_LOG")]
    pub log: Option<String>,
    /// Encrypt Secrets at rest (AES-GCM); once turned on it stays on
    #[arg(long, env = "SKIFF_SECRETS_ENCRYPTION", num_args = 0..=1, default_missing_value = "true")]
    pub secrets_encryption: Option<bool>,
    /// The node in this process.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Flags of `skiff agent`, named as K3s names them; also from `SKIFF_*` variables and
/// the config file, as the server's.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Config file (YAML whose keys are the flag names) [default: /etc/skiff/config.yaml]
    #[arg(long, short = 'c', env = "SKIFF_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// Folder to hold state [default: /var/lib/skiff]
    #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server to join, https://HOST:PORT
    #[arg(long, short = 's', env = "SKIFF_URL")]
    pub server: Option<String>,
    /// The token to join with (the server's `<data-dir>/server/token`, an agent token or a `skiff token create` token)
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// File holding the token
    #[arg(long, env = "SKIFF_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Log filter (tracing's syntax) [default: info]
    #[arg(long, env = "SKIFF_LOG")]
    pub log: Option<String>,
    /// The node.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Flags of the node, in `skiff server` and `skiff agent`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's name [default: the hostname]
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// The node's address [default: the address of the default route's interface]
    #[arg(long, env = "SKIFF_NODE_IP")]
    pub node_ip: Option<String>,
    /// External address of the node (LoadBalancer ingress)
    #[arg(long, env = "SKIFF_NODE_EXTERNAL_IP")]
    pub node_external_ip: Option<String>,
    /// Resolver configuration cluster DNS forwards with and `dnsPolicy: Default` pods get [default: /etc/resolv.conf, or systemd-resolved's real file]
    #[arg(long, env = "SKIFF_RESOLV_CONF")]
    pub resolv_conf: Option<PathBuf>,
    /// Interface the pod network's overlay runs over [default: the one holding the node address]
    #[arg(long, env = "SKIFF_NODE_INTERFACE")]
    pub node_interface: Option<String>,
    /// A label of the node, key=value (repeatable)
    #[arg(long = "node-label", env = "SKIFF_NODE_LABEL", value_delimiter = ',')]
    pub node_label: Vec<String>,
    /// A taint of the node, key=value:Effect (repeatable)
    #[arg(long = "node-taint", env = "SKIFF_NODE_TAINT", value_delimiter = ',')]
    pub node_taint: Vec<String>,
    /// Resources kept for Kubernetes daemons, e.g. cpu=200m,memory=256Mi
    #[arg(long, env = "SKIFF_KUBE_RESERVED")]
    pub kube_reserved: Option<String>,
    /// Resources kept for the system, e.g. cpu=100m,memory=128Mi
    #[arg(long, env = "SKIFF_SYSTEM_RESERVED")]
    pub system_reserved: Option<String>,
    /// Registry mirrors, credentials and TLS (K3s's registries.yaml format) [default: /etc/skiff/registries.yaml]
    #[arg(long, env = "SKIFF_PRIVATE_REGISTRY")]
    pub private_registry: Option<PathBuf>,
    /// Port of the node's API (logs, exec, port-forward); 0 picks a free one [default: 10250]
    #[arg(long, env = "SKIFF_KUBELET_PORT")]
    pub kubelet_port: Option<u16>,
    /// Containers without a seccompProfile run under RuntimeDefault, as the kubelet's --seccomp-default
    #[arg(long, env = "SKIFF_SECCOMP_DEFAULT", num_args = 0..=1, default_missing_value = "true")]
    pub seccomp_default: Option<bool>,
}

/// Flags of `skiff secrets-encrypt`.
#[derive(Debug, Args)]
pub struct SecretsEncryptArgs {
    /// The server's admin kubeconfig [default: /etc/skiff/skiff.yaml]
    #[arg(long, env = "SKIFF_WRITE_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value = "text", global = true)]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: SecretsEncryptCommand,
}

/// How `skiff secrets-encrypt` prints the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// As K3s prints it.
    Text,
    /// The server's answer.
    Json,
}

/// `skiff secrets-encrypt` subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum SecretsEncryptCommand {
    /// Whether Secrets are encrypted, and with which keys
    Status,
    /// Make a new key the active one, re-encrypt every Secret with it, drop the old keys
    RotateKeys,
}

/// Flags of `skiff token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The admin kubeconfig [default: /etc/skiff/skiff.yaml]
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// `skiff token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token that joins agents, and print it
    Create {
        /// How long it lasts (30m, 24h, 7d; 0 for ever)
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// What it is for
        #[arg(long)]
        description: Option<String>,
        /// The token to create ([a-z0-9]{6}.[a-z0-9]{16}) [default: a random one]
        token: Option<String>,
    },
    /// List the bootstrap tokens
    List,
    /// Delete bootstrap tokens by id (or whole token)
    Delete {
        /// The token ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Replace the server token; joined nodes keep working. Prints the new token.
    Rotate {
        /// The new secret [default: a random one]
        #[arg(long)]
        new_token: Option<String>,
    },
}

/// Flags of `skiff certificate`.
#[derive(Debug, Args)]
pub struct CertificateArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CertificateCommand,
}

/// `skiff certificate` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Renew this machine's certificates (not the CA) at skiff's next start; run it
    /// while skiff is stopped
    Rotate {
        /// Folder holding state [default: /var/lib/skiff]
        #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Flags of `skiff images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Folder holding state [default: /var/lib/skiff]
    #[arg(long, short = 'd', env = "SKIFF_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: ImagesCommand,
}

/// `skiff images` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import image tarballs (docker save or OCI layout; plain, .gz or .zst)
    Import {
        /// The tarballs.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the images
    Ls,
    /// Remove images by name (their content goes at the next prune)
    Rm {
        /// The image names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete the content of images no name refers to
    Prune,
}

/// Flags of `skiff sim-nodes`.
#[derive(Debug, Args)]
pub struct SimNodesArgs {
    /// Kubeconfig of the cluster to join
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// How many nodes
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Node names are <prefix><index>
    #[arg(long, default_value = "sim-")]
    pub name_prefix: String,
    /// CPU capacity of each node
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory capacity of each node
    #[arg(long, default_value = "8Gi")]
    pub memory: String,
    /// Pod capacity of each node
    #[arg(long, default_value_t = 110)]
    pub pods: u32,
    /// A label on every node, key=value (repeatable)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Seconds a Job's pod runs before it succeeds
    #[arg(long, default_value_t = 5.0)]
    pub job_duration: f64,
    /// Log filter [default: info]
    #[arg(long, env = "SKIFF_LOG", default_value = "info")]
    pub log: String,
}
