//! Building the server's configuration: file < environment < flags, then validation,
//! all before anything binds a port.

use crate::cli::{AgentArgs, NodeArgs, ServerArgs};
use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;
use serde::Deserialize;
use skiff_core::defaults;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The config file: the same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    bind_address: Option<String>,
    https_listen_port: Option<u16>,
    advertise_address: Option<String>,
    #[serde(default)]
    tls_san: Vec<String>,
    write_kubeconfig: Option<PathBuf>,
    write_kubeconfig_mode: Option<ModeValue>,
    service_cidr: Option<String>,
    cluster_cidr: Option<String>,
    cluster_dns: Option<String>,
    cluster_domain: Option<String>,
    network_backend: Option<String>,
    node_external_ip: Option<String>,
    node_interface: Option<String>,
    resolv_conf: Option<PathBuf>,
    service_node_port_range: Option<String>,
    disable_agent: Option<bool>,
    disable_scheduler: Option<bool>,
    disable_controller_manager: Option<bool>,
    scheduler_strategy: Option<String>,
    node_monitor_grace_period: Option<u64>,
    log: Option<String>,
    node_name: Option<String>,
    node_ip: Option<String>,
    #[serde(default)]
    node_label: Vec<String>,
    #[serde(default)]
    node_taint: Vec<String>,
    kube_reserved: Option<String>,
    system_reserved: Option<String>,
    kubelet_port: Option<u16>,
    private_registry: Option<PathBuf>,
    seccomp_default: Option<bool>,
    secrets_encryption: Option<bool>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    agent_token: Option<String>,
    agent_token_file: Option<PathBuf>,
    server: Option<String>,
}

/// A file mode written as a string ("0644") or a number (644).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ModeValue {
    Text(String),
    Number(u32),
}

fn read_file(path: &Path, explicit: bool) -> Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(FileConfig::default()),
        Ok(text) => serde_yaml_ng::from_str(&text)
            .with_context(|| format!("config file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
    }
}

/// The config file `--config` names (it must exist), or the default one if present.
fn config_file(given: Option<&Path>) -> Result<FileConfig> {
    match given {
        Some(path) => read_file(path, true),
        None => read_file(Path::new(defaults::CONFIG_PATH), false),
    }
}

fn parse_mode(s: &str) -> Result<u32> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
        anyhow!("--write-kubeconfig-mode {s:?} is not an octal file mode such as 0600")
    })?;
    if mode > 0o777 {
        bail!("--write-kubeconfig-mode {s:?} is not a file mode (at most 0777)");
    }
    Ok(mode)
}

fn parse_ip(flag: &str, s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| anyhow!("--{flag} {s:?} is not an IP address"))
}

fn parse_cidr(flag: &str, s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| anyhow!("--{flag} {s:?} is not an IPv4 CIDR such as 10.43.0.0/16"))?;
    if net.prefix_len() > 28 {
        bail!("--{flag} {s:?} is too small (a /28 at the least)");
    }
    Ok(net.trunc())
}

fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let bad = || anyhow!("--service-node-port-range {s:?} is not a range such as 30000-32767");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// What `skiff server` runs: the control plane, the node unless disabled, and the log
/// filter.
#[derive(Debug)]
pub struct Settings {
    /// The control plane.
    pub server: skiff_server::Config,
    /// The node in this process, unless `--disable-agent`.
    pub agent: Option<skiff_agent::kubelet::Config>,
    /// The log filter.
    pub log: String,
}

/// A token from `--<flag>` or, failing that, the file `--<flag>-file` names.
fn token_value(flag: &str, value: Option<String>, file: Option<PathBuf>) -> Result<Option<String>> {
    let text = match (value, file) {
        (Some(v), _) => v,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading --{flag}-file {}", path.display()))?,
        (None, None) => return Ok(None),
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        bail!("--{flag} is empty");
    }
    Ok(Some(text))
}

/// The host's name, for the node's default name.
fn hostname() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname")?
        .trim()
        .to_ascii_lowercase();
    if name.is_empty() {
        bail!("the hostname is empty; set --node-name");
    }
    Ok(name)
}

/// The address of the interface the default route leaves by; without a default route,
/// the first address that is not loopback; then loopback.
fn default_node_ip() -> IpAddr {
    // Connecting a UDP socket sends nothing; it only picks the route and its source.
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr());
    if let Ok(addr) = routed {
        return addr.ip();
    }
    first_local_address().unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn first_local_address() -> Option<IpAddr> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last: Option<IpAddr> = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '-', '+']);
        if let Ok(ip) = t.trim().parse::<IpAddr>() {
            last = Some(ip);
        } else if t.contains("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback()) {
                return Some(ip);
            }
        }
    }
    None
}

fn parse_reserved(
    flag: &str,
    s: Option<&str>,
    into: &mut std::collections::BTreeMap<
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    >,
) -> Result<()> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use skiff_agent::kubelet::container::{bytes, millicpu};
    for part in s
        .into_iter()
        .flat_map(|s| s.split(','))
        .filter(|p| !p.is_empty())
    {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--{flag} {part:?} is not resource=quantity"))?;
        let q = Quantity(v.to_string());
        let (total, one) = match k {
            "cpu" => (into.get(k).and_then(millicpu).unwrap_or(0), millicpu(&q)),
            "memory" | "ephemeral-storage" | "pid" => {
                (into.get(k).and_then(bytes).unwrap_or(0), bytes(&q))
            }
            other => bail!("--{flag}: unknown resource {other:?} (cpu, memory, ephemeral-storage)"),
        };
        let one = one.ok_or_else(|| anyhow!("--{flag} {part:?}: {v:?} is not a quantity"))?;
        let sum = total + one;
        into.insert(
            k.to_string(),
            Quantity(if k == "cpu" {
                format!("{sum}m")
            } else {
                sum.to_string()
            }),
        );
    }
    Ok(())
}

/// The node's configuration from its flags and the config file.
fn node_config(
    args: NodeArgs,
    file: &mut FileConfig,
    data_dir: &Path,
    control_plane: bool,
) -> Result<skiff_agent::kubelet::Config> {
    let node_name = match args.node_name.or(file.node_name.take()) {
        Some(n) => n,
        None => hostname()?,
    };
    let node_ip = match args.node_ip.or(file.node_ip.take()) {
        Some(ip) => parse_ip("node-ip", &ip)?,
        None => default_node_ip(),
    };
    let external_ip = match args.node_external_ip.or(file.node_external_ip.take()) {
        Some(ip) => match parse_ip("node-external-ip", &ip)? {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => bail!("--node-external-ip {ip:?}: only IPv4 is supported"),
        },
        None => None,
    };
    let network = skiff_agent::network::Config {
        node_name: node_name.clone(),
        node_ip: match node_ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => bail!("--node-ip {node_ip}: only IPv4 is supported"),
        },
        external_ip,
        interface: args.node_interface.or(file.node_interface.take()),
        // The cluster's settings: the server's own, or what an agent reads from its
        // server before its node starts.
        cluster_cidr: parse_cidr("cluster-cidr", defaults::CLUSTER_CIDR)?,
        service_cidr: parse_cidr("service-cidr", defaults::SERVICE_CIDR)?,
        cluster_dns: std::net::Ipv4Addr::new(10, 43, 0, 10),
        cluster_domain: defaults::CLUSTER_DOMAIN.into(),
        backend: skiff_agent::network::Backend::Vxlan,
        data_dir: data_dir.to_path_buf(),
        resolv_conf: args.resolv_conf.or(file.resolv_conf.take()),
    };
    let mut labels = std::collections::BTreeMap::new();
    let label_args = if args.node_label.is_empty() {
        std::mem::take(&mut file.node_label)
    } else {
        args.node_label
    };
    for l in label_args {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow!("--node-label {l:?} is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let mut taints = Vec::new();
    let taint_args = if args.node_taint.is_empty() {
        std::mem::take(&mut file.node_taint)
    } else {
        args.node_taint
    };
    for t in taint_args {
        taints.push(skiff_agent::kubelet::node::parse_taint(&t).ok_or_else(|| {
            anyhow!("--node-taint {t:?} is not key=value:Effect (NoSchedule, PreferNoSchedule or NoExecute)")
        })?);
    }
    let mut reserved = std::collections::BTreeMap::new();
    parse_reserved(
        "kube-reserved",
        args.kube_reserved.or(file.kube_reserved.take()).as_deref(),
        &mut reserved,
    )?;
    parse_reserved(
        "system-reserved",
        args.system_reserved
            .or(file.system_reserved.take())
            .as_deref(),
        &mut reserved,
    )?;
    Ok(skiff_agent::kubelet::Config {
        node_name,
        node_ip,
        data_dir: data_dir.to_path_buf(),
        pod_log_dir: PathBuf::from(defaults::POD_LOG_DIR),
        labels,
        taints,
        control_plane,
        reserved,
        kubelet_port: args.kubelet_port.or(file.kubelet_port).unwrap_or(10250),
        seccomp_default: args
            .seccomp_default
            .or(file.seccomp_default)
            .unwrap_or(false),
        registries: {
            let path = args
                .private_registry
                .or(file.private_registry.take())
                .unwrap_or_else(|| PathBuf::from(defaults::REGISTRIES_PATH));
            skiff_embedded::image::registries::Registries::load(&path)
                .with_context(|| format!("--private-registry {}", path.display()))?
        },
        shim_exe: std::env::current_exe()
            .context("finding skiff's own binary for the container shim")?,
        network,
    })
}

/// What `skiff agent` runs.
#[derive(Debug)]
pub struct AgentSettings {
    /// How it joins.
    pub join: skiff_agent::join::Config,
    /// The node.
    pub node: skiff_agent::kubelet::Config,
    /// The log filter.
    pub log: String,
}

/// The agent's configuration and log filter.
pub fn agent_config(args: AgentArgs) -> Result<AgentSettings> {
    let mut file = config_file(args.config.as_deref())?;
    let server = args
        .server
        .or(file.server.take())
        .ok_or_else(|| anyhow!("--server is required: the URL of the server to join, such as https://192.168.1.10:6443"))?;
    let server = skiff_agent::join::parse_server_url(&server)
        .map_err(|e| anyhow!("--server {server:?}: {e}"))?;
    let token = token_value(
        "token",
        args.token.or(file.token.take()),
        args.token_file.or(file.token_file.take()),
    )?
    .ok_or_else(|| {
        anyhow!(
            "--token is required: the server's token, from <data-dir>/server/token on the server"
        )
    })?;
    let token = skiff_core::token::Token::parse(&token, skiff_core::token::NODE_USER)
        .map_err(|e| anyhow!("--token: {e}"))?;
    let data_dir = args
        .data_dir
        .or(file.data_dir.take())
        .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
    let log = args
        .log
        .or(file.log.take())
        .unwrap_or_else(|| "info".into());
    let node = node_config(args.node, &mut file, &data_dir, false)?;
    Ok(AgentSettings {
        join: skiff_agent::join::Config {
            server,
            token,
            data_dir,
        },
        node,
        log,
    })
}

/// The server configuration and the log filter.
pub fn server_config(args: ServerArgs) -> Result<Settings> {
    let mut file = config_file(args.config.as_deref())?;

    let bind = args
        .bind_address
        .or(file.bind_address.take())
        .unwrap_or_else(|| "0.0.0.0".into());
    let advertise = args.advertise_address.or(file.advertise_address.take());
    let tls_sans = if args.tls_san.is_empty() {
        std::mem::take(&mut file.tls_san)
    } else {
        args.tls_san
    };
    let mode = match (
        args.write_kubeconfig_mode,
        file.write_kubeconfig_mode.take(),
    ) {
        (Some(m), _) | (None, Some(ModeValue::Text(m))) => parse_mode(&m)?,
        (None, Some(ModeValue::Number(n))) => parse_mode(&n.to_string())?,
        (None, None) => 0o600,
    };
    let service_cidr = parse_cidr(
        "service-cidr",
        &args
            .service_cidr
            .or(file.service_cidr.take())
            .unwrap_or_else(|| defaults::SERVICE_CIDR.into()),
    )?;
    let cluster_cidr = parse_cidr(
        "cluster-cidr",
        &args
            .cluster_cidr
            .or(file.cluster_cidr.take())
            .unwrap_or_else(|| defaults::CLUSTER_CIDR.into()),
    )?;
    let cluster_dns = match args.cluster_dns.or(file.cluster_dns.take()) {
        Some(ip) => match parse_ip("cluster-dns", &ip)? {
            IpAddr::V4(v4) if service_cidr.contains(&v4) => v4,
            _ => bail!(
                "--cluster-dns {ip:?} is not an IPv4 address in --service-cidr {service_cidr}"
            ),
        },
        None => std::net::Ipv4Addr::from(u32::from(service_cidr.network()) + 10),
    };
    let cluster_domain = args
        .cluster_domain
        .or(file.cluster_domain.take())
        .unwrap_or_else(|| defaults::CLUSTER_DOMAIN.into());
    if cluster_domain.is_empty()
        || cluster_domain.split('.').any(|l| {
            l.is_empty()
                || l.len() > 63
                || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        bail!("--cluster-domain {cluster_domain:?} is not a DNS domain such as cluster.local");
    }
    let network_backend = args
        .network_backend
        .or(file.network_backend.take())
        .unwrap_or_else(|| "vxlan".into());
    if skiff_agent::network::Backend::parse(&network_backend).is_none() {
        bail!("--network-backend {network_backend:?} is not one of vxlan, host-gw, none");
    }
    if service_cidr.contains(&cluster_cidr.network())
        || cluster_cidr.contains(&service_cidr.network())
    {
        bail!("--service-cidr {service_cidr} and --cluster-cidr {cluster_cidr} overlap");
    }
    let config = skiff_server::Config {
        data_dir: args
            .data_dir
            .or(file.data_dir.take())
            .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR)),
        bind_address: parse_ip("bind-address", &bind)?,
        https_port: args
            .https_listen_port
            .or(file.https_listen_port)
            .unwrap_or(defaults::HTTPS_PORT),
        advertise_address: advertise
            .map(|a| parse_ip("advertise-address", &a))
            .transpose()?,
        tls_sans,
        write_kubeconfig: args
            .write_kubeconfig
            .or(file.write_kubeconfig.take())
            .unwrap_or_else(|| PathBuf::from(defaults::KUBECONFIG_PATH)),
        write_kubeconfig_mode: mode,
        service_cidr,
        cluster_cidr,
        cluster_dns,
        cluster_domain: cluster_domain.clone(),
        network_backend: network_backend.clone(),
        service_node_port_range: parse_port_range(
            &args
                .service_node_port_range
                .or(file.service_node_port_range.take())
                .unwrap_or_else(|| defaults::SERVICE_NODE_PORT_RANGE.into()),
        )?,
        node: None,
        disable_scheduler: args
            .disable_scheduler
            .or(file.disable_scheduler)
            .unwrap_or(false),
        disable_controller_manager: args
            .disable_controller_manager
            .or(file.disable_controller_manager)
            .unwrap_or(false),
        scheduler: skiff_server::scheduler::Config {
            strategy: match args
                .scheduler_strategy
                .or(file.scheduler_strategy.take())
                .as_deref()
                .unwrap_or("least-allocated")
            {
                "least-allocated" => skiff_server::scheduler::Strategy::LeastAllocated,
                "binpack" => skiff_server::scheduler::Strategy::BinPack,
                other => {
                    bail!("--scheduler-strategy {other:?} is not one of least-allocated, binpack")
                }
            },
        },
        controllers: skiff_server::controllers::Config {
            node_monitor_grace_period: std::time::Duration::from_secs(
                args.node_monitor_grace_period
                    .or(file.node_monitor_grace_period)
                    .unwrap_or(40),
            ),
            cluster_cidr: Some(cluster_cidr),
            ..skiff_server::controllers::Config::default()
        },
        token: token_value(
            "token",
            args.token.or(file.token.take()),
            args.token_file.or(file.token_file.take()),
        )?,
        agent_token: token_value(
            "agent-token",
            args.agent_token.or(file.agent_token.take()),
            args.agent_token_file.or(file.agent_token_file.take()),
        )?,
        secrets_encryption: args
            .secrets_encryption
            .or(file.secrets_encryption)
            .unwrap_or(false),
    };
    let mut config = config;
    if config.https_port == 0 {
        bail!("--https-listen-port must not be 0");
    }
    let log = args
        .log
        .or(file.log.take())
        .unwrap_or_else(|| "info".into());
    let disable_agent = args.disable_agent.or(file.disable_agent).unwrap_or(false);
    let agent = if disable_agent {
        None
    } else {
        let mut node = node_config(args.node, &mut file, &config.data_dir, true)?;
        config.node = Some((node.node_name.clone(), node.node_ip));
        node.network.cluster_cidr = config.cluster_cidr;
        node.network.service_cidr = config.service_cidr;
        node.network.cluster_dns = config.cluster_dns;
        node.network.cluster_domain = config.cluster_domain.clone();
        node.network.backend = skiff_agent::network::Backend::parse(&config.network_backend)
            .unwrap_or(skiff_agent::network::Backend::Vxlan);
        Some(node)
    };
    Ok(Settings {
        server: config,
        agent,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ServerArgs {
        let mut argv = vec!["skiff", "server"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Server(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn file_is_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "https-listen-port: 7443\ntls-san: [a.example, 10.0.0.1]\nwrite-kubeconfig-mode: \"0644\"\ndata-dir: /tmp/x\n").unwrap();
        let f = file.to_str().unwrap();
        let c = server_config(args(&["--config", f])).unwrap().server;
        assert_eq!(c.https_port, 7443);
        assert_eq!(c.tls_sans, vec!["a.example", "10.0.0.1"]);
        assert_eq!(c.write_kubeconfig_mode, 0o644);
        let c = server_config(args(&[
            "--config",
            f,
            "--https-listen-port",
            "8443",
            "--tls-san",
            "b",
        ]))
        .unwrap()
        .server;
        assert_eq!(c.https_port, 8443);
        assert_eq!(c.tls_sans, vec!["b"]);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn seccomp_default_from_the_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "seccomp-default: true\n").unwrap();
        let agent = |extra: &[&str]| server_config(args(extra)).unwrap().agent.unwrap();
        assert!(agent(&["--config", file.to_str().unwrap()]).seccomp_default);
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        let e = empty.to_str().unwrap();
        assert!(!agent(&["--config", e]).seccomp_default);
        assert!(agent(&["--config", e, "--seccomp-default"]).seccomp_default);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.yaml");
        let m = missing.to_str().unwrap();
        assert!(
            server_config(args(&["--config", m])).is_err(),
            "an explicit missing file is an error"
        );
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        let e = empty.to_str().unwrap();
        let err = server_config(args(&["--config", e, "--service-cidr", "10.43.0.0"])).unwrap_err();
        assert!(err.to_string().contains("--service-cidr"));
        let err =
            server_config(args(&["--config", e, "--service-node-port-range", "5-1"])).unwrap_err();
        assert!(err.to_string().contains("--service-node-port-range"));
        let err =
            server_config(args(&["--config", e, "--cluster-cidr", "10.43.0.0/16"])).unwrap_err();
        assert!(err.to_string().contains("overlap"));
        let unknown = dir.path().join("unknown.yaml");
        std::fs::write(&unknown, "no-such-flag: 1\n").unwrap();
        assert!(server_config(args(&["--config", unknown.to_str().unwrap()])).is_err());
    }
}
