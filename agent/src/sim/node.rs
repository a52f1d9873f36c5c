//! What a simulated node looks like: its name, addresses, pod range, the Node object it
//! registers and the conditions it reports. Pure functions of the configuration, the
//! node's index and the time.

use super::SimConfig;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Node addresses come from 10.99.0.0/16: reserved for simulated nodes, never routed.
const NODE_NET: u32 = u32::from_be_bytes([10, 99, 0, 0]);
/// How many node addresses that range holds (host numbers 1..=65534).
const NODE_NET_HOSTS: usize = (1 << 16) - 2;
/// Pod ranges are carved out of 10.128.0.0/9, one block per node.
const POD_NET: u32 = u32::from_be_bytes([10, 128, 0, 0]);
/// Bits of host part in the pod range.
const POD_NET_BITS: u32 = 23;
/// Every node reports this much ephemeral storage.
const EPHEMERAL_STORAGE: &str = "100Gi";
/// The runtime the node reports, so that nobody mistakes its pods for real ones.
pub const RUNTIME_VERSION: &str = "sim://";
/// The label every simulated node carries.
pub const TYPE_LABEL: (&str, &str) = ("type", "sim");

/// A node's pod address block: `base/prefix`, handing out host numbers
/// `1..size-1` (the network and broadcast addresses stay unused, as with host-local IPAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRange {
    /// The network address.
    pub base: u32,
    /// The prefix length.
    pub prefix: u8,
}

impl PodRange {
    /// How many addresses the block spans, network and broadcast included.
    pub fn size(self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    /// The address of host number `n` in the block.
    pub fn addr(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + n)
    }

    /// The host number of `ip` if it lies in the block (network/broadcast excluded).
    pub fn host_number(self, ip: Ipv4Addr) -> Option<u32> {
        let n = u32::from(ip).wrapping_sub(self.base);
        (n > 0 && n < self.size() - 1).then_some(n)
    }

    /// Parses `a.b.c.d/p` (IPv4 only).
    pub fn parse(cidr: &str) -> Option<PodRange> {
        let (ip, prefix) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if !(1..=30).contains(&prefix) {
            return None;
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Some(PodRange {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for PodRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Why a configuration cannot be simulated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// More nodes than the node address range holds.
    #[error("{0} nodes do not fit in 10.99.0.0/16 (at most {NODE_NET_HOSTS})")]
    TooManyNodes(usize),
    /// The pod blocks of all nodes do not fit in the pod range.
    #[error("{count} nodes of {pods} pods each do not fit in 10.128.0.0/9")]
    PodRangeTooSmall {
        /// Nodes asked for.
        count: usize,
        /// Pods per node asked for.
        pods: u32,
    },
}

/// How addresses are laid out for `count` nodes of `pods` pods each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bits of host part of each node's pod block (at least 8: a /24).
    pod_bits: u32,
}

impl Layout {
    /// Checks that `count` nodes with `pods` pods each fit the reserved ranges.
    pub fn new(count: usize, pods: u32) -> Result<Layout, LayoutError> {
        if count > NODE_NET_HOSTS {
            return Err(LayoutError::TooManyNodes(count));
        }
        // Room for every pod plus the network and broadcast addresses.
        let needed = u64::from(pods) + 2;
        let pod_bits = (64 - (needed - 1).leading_zeros()).max(8);
        let fits =
            pod_bits <= POD_NET_BITS && (count as u64) <= (1u64 << (POD_NET_BITS - pod_bits));
        if !fits {
            return Err(LayoutError::PodRangeTooSmall { count, pods });
        }
        Ok(Layout { pod_bits })
    }

    /// The InternalIP of node `index`.
    pub fn node_ip(self, index: usize) -> Ipv4Addr {
        // `new` checked that index + 1 stays below 2^16 - 1.
        Ipv4Addr::from(NODE_NET + index as u32 + 1)
    }

    /// The pod block of node `index`.
    pub fn pod_range(self, index: usize) -> PodRange {
        PodRange {
            base: POD_NET + ((index as u32) << self.pod_bits),
            prefix: (32 - self.pod_bits) as u8,
        }
    }
}

/// The name of node `index`.
pub fn node_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// The architecture as Kubernetes spells it (`GOARCH`).
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

/// Everything that identifies one simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's name.
    pub name: String,
    /// Its InternalIP.
    pub ip: Ipv4Addr,
    /// Its pod address block.
    pub pod_range: PodRange,
}

/// The labels of a simulated node: the configured ones, then the well-known ones a
/// kubelet sets (which win, as the kubelet's own do).
pub fn labels(config: &SimConfig, name: &str, arch: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = config.labels.iter().cloned().collect();
    for (k, v) in [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
        TYPE_LABEL,
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    labels
}

/// The Node a simulated node registers: labels, pod range, and the status a kubelet
/// sends on registration (capacity, addresses, system info), without conditions: those
/// follow through `nodes/status`.
pub fn build_node(config: &SimConfig, id: &NodeIdentity, arch: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels(config, &id.name, arch)),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_string(),
                "0".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(id.pod_range.to_string()),
            pod_cidrs: Some(vec![id.pod_range.to_string()]),
            provider_id: Some(format!("sim://{}", id.name)),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            conditions: None,
            ..node_status(config, id, arch, Timestamp::UNIX_EPOCH, None)
        }),
    }
}

/// The full status of a simulated node at `now`. `previous` is what the API holds, so
/// a condition that does not change keeps its transition time.
pub fn node_status(
    config: &SimConfig,
    id: &NodeIdentity,
    arch: &str,
    now: Timestamp,
    previous: Option<&NodeStatus>,
) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(config.cpu.clone())),
        ("memory".to_string(), Quantity(config.memory.clone())),
        ("pods".to_string(), Quantity(config.pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity(EPHEMERAL_STORAGE.to_string()),
        ),
    ]);
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: id.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: id.name.clone(),
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: arch.to_string(),
            boot_id: id.name.clone(),
            container_runtime_version: RUNTIME_VERSION.to_string(),
            kernel_version: "sim".to_string(),
            kube_proxy_version: String::new(),
            kubelet_version: skiff_core::defaults::KUBERNETES_VERSION.to_string(),
            machine_id: id.name.clone(),
            operating_system: "linux".to_string(),
            os_image: "skiff simulated node".to_string(),
            system_uuid: id.name.clone(),
            ..NodeSystemInfo::default()
        }),
        conditions: Some(conditions(
            now,
            previous.and_then(|s| s.conditions.as_deref()),
        )),
        ..NodeStatus::default()
    }
}

/// The conditions a healthy kubelet reports at `now`: Ready, and no pressure of any
/// kind. A condition whose status is unchanged from `previous` keeps its transition time.
pub fn conditions(now: Timestamp, previous: Option<&[NodeCondition]>) -> Vec<NodeCondition> {
    conditions_under(now, previous, [false; 3])
}

/// The node conditions at `now` with memory, disk and PID pressure as `pressure` says
/// (in that order); Ready either way, as upstream (pressure taints the node instead).
pub fn conditions_under(
    now: Timestamp,
    previous: Option<&[NodeCondition]>,
    pressure: [bool; 3],
) -> Vec<NodeCondition> {
    let [memory, disk, pid] = pressure;
    let pick = |on: bool, yes: (&'static str, &'static str), no: (&'static str, &'static str)| {
        if on {
            ("True", yes.0, yes.1)
        } else {
            ("False", no.0, no.1)
        }
    };
    let (m, d, p) = (
        pick(
            memory,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        pick(
            disk,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        pick(
            pid,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
    );
    [
        ("MemoryPressure", m.0, m.1, m.2),
        ("DiskPressure", d.0, d.1, d.2),
        ("PIDPressure", p.0, p.1, p.2),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| {
        let since = previous
            .and_then(|p| p.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(since),
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> SimConfig {
        SimConfig {
            count: 3,
            name_prefix: "sim-".to_string(),
            cpu: "4".to_string(),
            memory: "8Gi".to_string(),
            pods: 110,
            labels: vec![
                ("zone".to_string(), "a".to_string()),
                ("type".to_string(), "mine".to_string()),
            ],
            job_duration: Duration::from_secs(5),
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn identity(layout: Layout, index: usize) -> NodeIdentity {
        NodeIdentity {
            name: node_name("sim-", index),
            ip: layout.node_ip(index),
            pod_range: layout.pod_range(index),
        }
    }

    #[test]
    fn layout_gives_each_node_its_own_addresses() {
        let layout = Layout::new(1000, 110).unwrap();
        assert_eq!(layout.node_ip(0), Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(layout.node_ip(999), Ipv4Addr::new(10, 99, 3, 232));
        assert_eq!(layout.pod_range(0).to_string(), "10.128.0.0/24");
        assert_eq!(layout.pod_range(1).to_string(), "10.128.1.0/24");
        assert_eq!(layout.pod_range(999).to_string(), "10.131.231.0/24");

        // More pods than a /24 holds: bigger blocks.
        let layout = Layout::new(10, 300).unwrap();
        assert_eq!(layout.pod_range(1).to_string(), "10.128.2.0/23");
        assert_eq!(
            Layout::new(100_000, 110),
            Err(LayoutError::TooManyNodes(100_000))
        );
        assert_eq!(
            Layout::new(60_000, 1000),
            Err(LayoutError::PodRangeTooSmall {
                count: 60_000,
                pods: 1000
            })
        );
    }

    #[test]
    fn pod_range_parses_and_numbers_hosts() {
        let r = PodRange::parse("10.128.5.7/24").unwrap();
        assert_eq!(r.to_string(), "10.128.5.0/24");
        assert_eq!(r.host_number(Ipv4Addr::new(10, 128, 5, 9)), Some(9));
        assert_eq!(r.host_number(Ipv4Addr::new(10, 128, 5, 0)), None);
        assert_eq!(r.host_number(Ipv4Addr::new(10, 128, 5, 255)), None);
        assert_eq!(r.host_number(Ipv4Addr::new(10, 128, 6, 1)), None);
        assert_eq!(r.addr(3), Ipv4Addr::new(10, 128, 5, 3));
        assert_eq!(PodRange::parse("fd00::/64"), None);
        assert_eq!(PodRange::parse("10.0.0.0/33"), None);
    }

    #[test]
    fn built_node_has_capacity_labels_and_info_but_no_conditions() {
        let layout = Layout::new(3, 110).unwrap();
        let node = build_node(&config(), &identity(layout, 2), "amd64");
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("sim-2"));
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels["type"], "sim", "the well-known label wins");
        assert_eq!(labels["kubernetes.io/hostname"], "sim-2");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        let spec = node.spec.as_ref().unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.128.2.0/24"));

        let status = node.status.as_ref().unwrap();
        assert!(status.conditions.is_none());
        for r in [status.capacity.as_ref(), status.allocatable.as_ref()] {
            let r = r.unwrap();
            assert_eq!(r["cpu"].0, "4");
            assert_eq!(r["memory"].0, "8Gi");
            assert_eq!(r["pods"].0, "110");
            assert_eq!(r["ephemeral-storage"].0, "100Gi");
        }
        let addresses = status.addresses.as_ref().unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "10.99.0.3");
        let info = status.node_info.as_ref().unwrap();
        assert_eq!(info.container_runtime_version, "sim://");
        assert_eq!(
            info.kubelet_version,
            skiff_core::defaults::KUBERNETES_VERSION
        );
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.architecture, "amd64");
    }

    #[test]
    fn conditions_report_ready_and_keep_transition_times() {
        let fresh = conditions(ts(100), None);
        let by_type =
            |cs: &[NodeCondition], t: &str| cs.iter().find(|c| c.type_ == t).cloned().unwrap();
        let ready = by_type(&fresh, "Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready.last_transition_time, Some(Time(ts(100))));
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(by_type(&fresh, t).status, "False");
        }

        // A heartbeat later: new heartbeat, same transition.
        let later = conditions(ts(160), Some(&fresh));
        let ready = by_type(&later, "Ready");
        assert_eq!(ready.last_heartbeat_time, Some(Time(ts(160))));
        assert_eq!(ready.last_transition_time, Some(Time(ts(100))));

        // The controller marked it Unknown: becoming Ready again is a transition.
        let mut unknown = later.clone();
        unknown.iter_mut().for_each(|c| {
            if c.type_ == "Ready" {
                c.status = "Unknown".to_string();
            }
        });
        let again = conditions(ts(300), Some(&unknown));
        assert_eq!(
            by_type(&again, "Ready").last_transition_time,
            Some(Time(ts(300)))
        );
        assert_eq!(
            by_type(&again, "DiskPressure").last_transition_time,
            Some(Time(ts(100)))
        );
    }

    #[test]
    fn arch_names_follow_go() {
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("aarch64"), "arm64");
    }
}
