//! The node: its Node object (capacity, addresses, system info, labels, taints,
//! conditions) and its heartbeat (a Lease renewed every 10 s, the status every minute
//! or when it changes), as upstream's kubelet keeps them.

use super::{Error, Kubelet};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, NodeSystemInfo, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the Lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The status heartbeat comes every this many lease rounds.
const STATUS_EVERY: u32 = 6;

/// What the host is, read from /proc and /etc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// CPUs.
    pub cpus: u64,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// Bytes of the filesystem holding the data folder.
    pub storage_bytes: u64,
    /// `uname -r`.
    pub kernel: String,
    /// PRETTY_NAME of os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// This boot's id.
    pub boot_id: String,
    /// The kernel filters system calls (seccomp).
    pub seccomp: bool,
}

impl Host {
    /// Reads the host's facts.
    pub fn read(data_dir: &std::path::Path) -> Host {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let storage_bytes = rustix::fs::statvfs(data_dir)
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
            .unwrap_or(0);
        Host {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_kib,
            storage_bytes,
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            seccomp: skiff_embedded::container::seccomp::supported(&read("/proc/self/status")),
        }
    }
}

/// Memory, disk and PID pressure now, by upstream's hard eviction thresholds:
/// `memory.available < 100Mi`, `nodefs.available < 10%` (the data folder's
/// filesystem), and more than 90 % of `pid_max` in use.
pub fn pressure(data_dir: &std::path::Path) -> [bool; 3] {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available_kib: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    let memory = available_kib.is_some_and(|kib| kib < 100 * 1024);
    let disk = rustix::fs::statvfs(data_dir)
        .map(|s| s.f_blocks > 0 && s.f_bavail.saturating_mul(10) < s.f_blocks)
        .unwrap_or(false);
    let pid_max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let threads: Option<u64> = std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| {
        l.split_whitespace()
            .nth(3)
            .and_then(|f| f.split_once('/'))
            .and_then(|(_, t)| t.parse().ok())
    });
    let pid = matches!((threads, pid_max), (Some(t), Some(m)) if t.saturating_mul(10) > m.saturating_mul(9));
    [memory, disk, pid]
}

/// The architecture as Kubernetes spells it.
pub fn kube_arch() -> &'static str {
    crate::sim::node::kube_arch(std::env::consts::ARCH)
}

/// The node's labels: the configured ones, then the well-known ones (which win).
pub fn labels(k: &super::Config) -> BTreeMap<String, String> {
    let mut labels = k.labels.clone();
    let arch = kube_arch();
    for (key, v) in [
        ("kubernetes.io/hostname", k.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ] {
        labels.insert(key.to_string(), v.to_string());
    }
    if k.control_plane {
        labels.insert(
            "node-role.kubernetes.io/control-plane".into(),
            "true".into(),
        );
    }
    labels
}

/// `cpu`, `memory`, `pods`, `ephemeral-storage` less what is reserved.
pub fn resources(
    host: &Host,
    reserved: &BTreeMap<String, Quantity>,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(host.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", host.memory_kib)),
        ),
        (
            "pods".to_string(),
            Quantity(skiff_core::defaults::MAX_PODS.to_string()),
        ),
        (
            "ephemeral-storage".to_string(),
            Quantity(format!("{}", host.storage_bytes)),
        ),
    ]);
    let mut allocatable = capacity.clone();
    let cpu_m = (host.cpus as i64 * 1000)
        - reserved
            .get("cpu")
            .and_then(super::container::millicpu)
            .unwrap_or(0);
    allocatable.insert("cpu".into(), Quantity(format!("{}m", cpu_m.max(0))));
    let mem = (host.memory_kib as i64 * 1024)
        - reserved
            .get("memory")
            .and_then(super::container::bytes)
            .unwrap_or(0);
    allocatable.insert(
        "memory".into(),
        Quantity(format!("{}Ki", mem.max(0) / 1024)),
    );
    let storage = host.storage_bytes as i64
        - reserved
            .get("ephemeral-storage")
            .and_then(super::container::bytes)
            .unwrap_or(0);
    allocatable.insert(
        "ephemeral-storage".into(),
        Quantity(storage.max(0).to_string()),
    );
    (capacity, allocatable)
}

/// The node's status at `now`; conditions keep their transition times from `previous`.
pub fn status(
    k: &super::Config,
    host: &Host,
    api_port: u16,
    now: Timestamp,
    previous: Option<&NodeStatus>,
) -> NodeStatus {
    let (capacity, allocatable) = resources(host, &k.reserved);
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(
            [
                Some(("InternalIP", k.node_ip.to_string())),
                // `--node-external-ip`: what LoadBalancer Services are given, as K3s.
                k.network
                    .external_ip
                    .map(|ip| ("ExternalIP", ip.to_string())),
                Some(("Hostname", k.node_name.clone())),
            ]
            .into_iter()
            .flatten()
            .map(|(type_, address)| NodeAddress {
                type_: type_.into(),
                address,
            })
            .collect(),
        ),
        node_info: Some(NodeSystemInfo {
            architecture: kube_arch().to_string(),
            boot_id: host.boot_id.clone(),
            container_runtime_version: format!(
                "{}://{}",
                skiff_core::defaults::RUNTIME_NAME,
                env!("CARGO_PKG_VERSION")
            ),
            kernel_version: host.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: skiff_core::defaults::KUBERNETES_VERSION.to_string(),
            machine_id: host.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: host.os_image.clone(),
            system_uuid: host.machine_id.clone(),
            ..NodeSystemInfo::default()
        }),
        conditions: Some(crate::sim::node::conditions_under(
            now,
            previous.and_then(|s| s.conditions.as_deref()),
            pressure(&k.data_dir),
        )),
        daemon_endpoints: Some(k8s_openapi::api::core::v1::NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                port: i32::from(api_port),
            }),
        }),
        ..NodeStatus::default()
    }
}

fn node_object(k: &super::Config) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(k.node_name.clone()),
            labels: Some(labels(k)),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_string(),
                "0".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!k.taints.is_empty()).then(|| k.taints.clone()),
            provider_id: Some(format!(
                "{}://{}",
                skiff_core::defaults::RUNTIME_NAME,
                k.node_name
            )),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// Registers the node (creating it, or taking over the one with its name: labels and
/// taints it was given are added), writes its status and its Lease; returns its uid.
pub async fn register(k: &Kubelet) -> Result<String, Error> {
    let nodes: Api<Node> = Api::all(k.client.clone());
    let wanted = node_object(&k.config);
    let fail = |source| Error::Api {
        what: "registering the node",
        source,
    };
    let node = match nodes.create(&PostParams::default(), &wanted).await {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = nodes.get(&k.config.node_name).await.map_err(fail)?;
            let mut taints = existing
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            for t in &k.config.taints {
                if !taints
                    .iter()
                    .any(|x| x.key == t.key && x.effect == t.effect)
                {
                    taints.push(t.clone());
                }
            }
            let patch = Patch::Merge(serde_json::json!({
                "metadata": {"labels": wanted.metadata.labels},
                "spec": {"taints": taints},
            }));
            nodes
                .patch(&k.config.node_name, &PatchParams::default(), &patch)
                .await
                .map_err(fail)?
        }
        Err(e) => return Err(fail(e)),
    };
    write_status(k, node.status.as_ref()).await?;
    let uid = node.metadata.uid.clone().unwrap_or_default();
    renew_lease(k, &uid).await?;
    tracing::info!(node = %k.config.node_name, ip = %k.config.node_ip, "node registered");
    Ok(uid)
}

async fn write_status(k: &Kubelet, previous: Option<&NodeStatus>) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(k.client.clone());
    let status = status(&k.config, &k.host, k.api_port, Timestamp::now(), previous);
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    nodes
        .patch_status(&k.config.node_name, &PatchParams::default(), &patch)
        .await
        .map(|_| ())
        .map_err(|source| Error::Api {
            what: "writing the node's status",
            source,
        })
}

async fn renew_lease(k: &Kubelet, node_uid: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(k.client.clone(), "kube-node-lease");
    let name = &k.config.node_name;
    let now = MicroTime(Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some("kube-node-lease".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.clone(),
                uid: node_uid.to_string(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(40),
            renew_time: Some(now.clone()),
            ..LeaseSpec::default()
        }),
    };
    let fail = |source| Error::Api {
        what: "renewing the node's lease",
        source,
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = Patch::Merge(serde_json::json!({
                "metadata": {"ownerReferences": lease.metadata.owner_references},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            }));
            leases
                .patch(name, &PatchParams::default(), &patch)
                .await
                .map(|_| ())
                .map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

/// Renews the Lease and refreshes the status until cancelled; failures are logged and
/// retried on the next round (the node goes NotReady if they last).
pub async fn heartbeat(k: std::sync::Arc<Kubelet>, node_uid: String, cancel: CancellationToken) {
    let mut round = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(LEASE_RENEW) => {}
        }
        round += 1;
        if let Err(e) = renew_lease(&k, &node_uid).await {
            tracing::warn!(error = %e, "renewing the node's lease");
        }
        if round.is_multiple_of(STATUS_EVERY) {
            let nodes: Api<Node> = Api::all(k.client.clone());
            let previous = nodes
                .get_status(&k.config.node_name)
                .await
                .ok()
                .and_then(|n| n.status);
            if let Err(e) = write_status(&k, previous.as_ref()).await {
                tracing::warn!(error = %e, "writing the node's status");
            }
        }
    }
}

/// Parses `key=value:Effect` or `key:Effect` (a `--node-taint`).
pub fn parse_taint(s: &str) -> Option<Taint> {
    let (kv, effect) = s.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return None;
    }
    Some(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> super::super::Config {
        super::super::Config {
            node_name: "edge-1".into(),
            node_ip: "10.0.0.5".parse().unwrap(),
            data_dir: "/tmp".into(),
            pod_log_dir: "/tmp/logs".into(),
            labels: BTreeMap::from([
                ("kubernetes.io/os".into(), "bogus".into()),
                ("zone".into(), "a".into()),
            ]),
            taints: vec![],
            control_plane: true,
            reserved: BTreeMap::from([
                ("cpu".into(), Quantity("500m".into())),
                ("memory".into(), Quantity("1Gi".into())),
            ]),
            shim_exe: "/proc/self/exe".into(),
            kubelet_port: 10250,
            registries: Default::default(),
            seccomp_default: false,
            network: crate::network::Config {
                node_name: "edge-1".into(),
                node_ip: "10.0.0.5".parse().unwrap(),
                external_ip: None,
                interface: None,
                cluster_cidr: "10.42.0.0/16".parse().unwrap(),
                service_cidr: "10.43.0.0/16".parse().unwrap(),
                cluster_dns: "10.43.0.10".parse().unwrap(),
                cluster_domain: "cluster.local".into(),
                backend: crate::network::Backend::None,
                data_dir: "/tmp".into(),
                resolv_conf: None,
            },
        }
    }

    #[test]
    fn an_external_address_is_published() {
        let mut c = config();
        c.network.external_ip = Some("203.0.113.9".parse().unwrap());
        let host = Host::read(std::path::Path::new("/nonexistent"));
        let s = status(&c, &host, 10250, Timestamp::now(), None);
        let addrs: Vec<(String, String)> = s
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addrs,
            [
                ("InternalIP".to_string(), "10.0.0.5".to_string()),
                ("ExternalIP".into(), "203.0.113.9".into()),
                ("Hostname".into(), "edge-1".into()),
            ]
        );
    }

    #[test]
    fn labels_status_and_reserved() {
        let c = config();
        let l = labels(&c);
        assert_eq!(l["kubernetes.io/os"], "linux", "well-known labels win");
        assert_eq!(l["zone"], "a");
        assert_eq!(l["node-role.kubernetes.io/control-plane"], "true");
        let host = Host {
            cpus: 2,
            memory_kib: 4 << 20,
            storage_bytes: 10 << 30,
            ..Host::default()
        };
        let s = status(&c, &host, 10250, Timestamp::UNIX_EPOCH, None);
        assert_eq!(s.capacity.as_ref().unwrap()["cpu"].0, "2");
        assert_eq!(s.allocatable.as_ref().unwrap()["cpu"].0, "1500m");
        assert_eq!(
            s.allocatable.as_ref().unwrap()["memory"].0,
            format!("{}Ki", (4 << 20) - (1 << 20))
        );
        assert_eq!(s.capacity.as_ref().unwrap()["pods"].0, "110");
        assert!(s
            .node_info
            .unwrap()
            .container_runtime_version
            .starts_with("skiff://"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn pressure_shows_in_conditions() {
        let c =
            crate::sim::node::conditions_under(Timestamp::UNIX_EPOCH, None, [false, true, false]);
        let disk = c.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("True", Some("KubeletHasDiskPressure"))
        );
        let ready = c.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn taints_parse() {
        let t = parse_taint("dedicated=edge:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("edge"), "NoSchedule")
        );
        let t = parse_taint("gpu:NoExecute").unwrap();
        assert_eq!(t.value, None);
        assert!(parse_taint("gpu=x:Sometimes").is_none());
        assert!(parse_taint("nocolon").is_none());
    }
}
