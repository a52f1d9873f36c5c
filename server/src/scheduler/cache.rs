//! The scheduler's view of the cluster: nodes, and per node the pods on it with their
//! requests summed as pods come and go, including the pods this scheduler has just decided
//! to bind ("assumed") before the watch confirms them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint};

use super::resources::{node_allocatable, non_zero_requests, pod_requests, Resources};

/// The label that names a node's host.
#[cfg(test)]
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// The label that names a node's zone.
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// The taint of a node whose Ready condition is False or missing.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// What scheduling needs of a Node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`, plus the not-ready or unreachable taint the node lifecycle controller
    /// would put on a node that is not Ready (so a node that never reported Ready takes no
    /// pods but those that tolerate it).
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable`.
    pub allocatable: Resources,
}

impl NodeFacts {
    /// Reads a Node.
    pub fn from_node(node: &Node) -> NodeFacts {
        let spec = node.spec.as_ref();
        let mut taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let implied = match ready {
            Some("True") => None,
            Some("Unknown") => Some(UNREACHABLE),
            _ => Some(NOT_READY),
        };
        if let Some(key) = implied {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                taints.push(Taint {
                    key: key.to_owned(),
                    effect: "NoSchedule".to_owned(),
                    ..Default::default()
                });
            }
        }
        NodeFacts {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: node_allocatable(node),
        }
    }
}

/// A host port a pod takes on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The host IP (`0.0.0.0` when unset).
    pub ip: String,
    /// The port.
    pub port: i32,
}

/// What scheduling needs of a Pod (one placed, or the one being placed).
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// `namespace/name`.
    pub key: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// What the pod requests (see [`pod_requests`]).
    pub requests: Resources,
    /// CPU and memory for scoring (see [`non_zero_requests`]).
    pub non_zero: (i64, i64),
    /// Host ports of its containers.
    pub host_ports: Vec<HostPort>,
    /// The uid of its controller (the ownerReference with `controller: true`).
    pub owner: Option<String>,
    /// Its required anti-affinity terms.
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// It has a deletionTimestamp.
    pub terminating: bool,
    /// `spec.priority` (0 when unset; the scheduler fills it in from the PriorityClass
    /// when admission did not).
    pub priority: i32,
    /// `status.startTime` in seconds since the epoch; `None` when not started, which
    /// counts as "now" (the latest).
    pub start: Option<i64>,
    /// It is terminating because this scheduler preempted it (deletionTimestamp and a
    /// `DisruptionTarget` condition with reason `PreemptionByScheduler`).
    pub preempted: bool,
}

/// The condition type upstream puts on a pod about to be disrupted.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// The reason of that condition when the scheduler preempts the pod.
pub const PREEMPTION_BY_SCHEDULER: &str = "PreemptionByScheduler";

impl PodFacts {
    /// Reads a Pod.
    pub fn from_pod(pod: &Pod) -> PodFacts {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let (requests, non_zero, host_ports, anti_affinity) = match &pod.spec {
            Some(spec) => (
                pod_requests(spec),
                non_zero_requests(spec),
                host_ports(spec),
                spec.affinity
                    .as_ref()
                    .and_then(|a| a.pod_anti_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .clone()
                    })
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let status = pod.status.as_ref();
        let preempted = meta.deletion_timestamp.is_some()
            && status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == DISRUPTION_TARGET))
                .is_some_and(|c| {
                    c.status == "True" && c.reason.as_deref() == Some(PREEMPTION_BY_SCHEDULER)
                });
        PodFacts {
            key: format!("{namespace}/{name}"),
            namespace,
            name,
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            requests,
            non_zero,
            host_ports,
            owner: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            anti_affinity,
            terminating: meta.deletion_timestamp.is_some(),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            start: status
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_second()),
            preempted,
        }
    }
}

fn host_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<HostPort> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".to_owned()),
                port,
            })
        })
        .collect()
}

/// A node and the pods placed on it.
#[derive(Debug, Default)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// The node; `None` while pods name a node the watch has not shown (yet, or anymore).
    pub facts: Option<NodeFacts>,
    /// Sum of the requests of its pods.
    pub requested: Resources,
    /// Sum of the scoring requests (CPU, memory) of its pods.
    pub non_zero: (i64, i64),
    /// Host ports in use, with how many pods use each.
    pub ports: HashMap<HostPort, u32>,
    /// Its pods by key.
    pub pods: HashMap<String, Arc<PodFacts>>,
    /// How many of its pods each controller owns.
    pub owners: HashMap<String, u32>,
}

impl NodeInfo {
    fn add(&mut self, pod: Arc<PodFacts>) {
        self.requested.add(&pod.requests);
        self.non_zero.0 += pod.non_zero.0;
        self.non_zero.1 += pod.non_zero.1;
        for p in &pod.host_ports {
            *self.ports.entry(p.clone()).or_default() += 1;
        }
        if let Some(o) = &pod.owner {
            *self.owners.entry(o.clone()).or_default() += 1;
        }
        self.pods.insert(pod.key.clone(), pod);
    }

    fn remove(&mut self, key: &str) {
        let Some(pod) = self.pods.remove(key) else {
            return;
        };
        self.requested.sub(&pod.requests);
        self.non_zero.0 -= pod.non_zero.0;
        self.non_zero.1 -= pod.non_zero.1;
        for p in &pod.host_ports {
            if let Some(n) = self.ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(p);
                }
            }
        }
        if let Some(o) = &pod.owner {
            if let Some(n) = self.owners.get_mut(o) {
                *n -= 1;
                if *n == 0 {
                    self.owners.remove(o);
                }
            }
        }
    }

    /// Whether any pod here uses `port` in a way that clashes with it.
    pub fn port_in_use(&self, port: &HostPort) -> bool {
        if self.ports.is_empty() {
            return false;
        }
        self.ports.keys().any(|used| used.clashes(port))
    }
}

impl HostPort {
    /// Whether two pods using these ports cannot share a node.
    pub fn clashes(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

#[derive(Debug)]
struct Placed {
    node: String,
    facts: Arc<PodFacts>,
    assumed: bool,
}

/// Nodes and placed pods, indexed by node.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, Placed>,
    real_nodes: usize,
    zones: HashMap<String, usize>,
    anti_affinity: HashSet<String>,
    /// Pending pods nominated to a node (after preempting there): node → key → pod.
    nominated: HashMap<String, HashMap<String, Arc<PodFacts>>>,
    /// Key → the node it is nominated to.
    nominated_node: HashMap<String, String>,
}

impl Cache {
    /// Number of nodes the watch has shown.
    pub fn node_count(&self) -> usize {
        self.real_nodes
    }

    /// Number of distinct zones among the nodes.
    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    /// All node slots, including placeholders (`facts: None`), in a stable order.
    pub fn slots(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// Keys of placed pods with required anti-affinity terms.
    pub fn anti_affinity_pods(&self) -> impl Iterator<Item = (&NodeInfo, &PodFacts)> {
        self.anti_affinity.iter().filter_map(|k| {
            let placed = self.pods.get(k)?;
            Some((self.node(&placed.node)?, placed.facts.as_ref()))
        })
    }

    fn slot(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        self.nodes.push(NodeInfo {
            name: name.to_owned(),
            ..Default::default()
        });
        let i = self.nodes.len() - 1;
        self.index.insert(name.to_owned(), i);
        i
    }

    fn drop_slot_if_empty(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.nodes[i].facts.is_some() || !self.nodes[i].pods.is_empty() {
            return;
        }
        self.index.remove(name);
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
    }

    fn zone_delta(&mut self, facts: Option<&NodeFacts>, delta: isize) {
        let Some(zone) = facts.and_then(|f| f.labels.get(ZONE)) else {
            return;
        };
        let n = self.zones.entry(zone.clone()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.zones.remove(zone);
        }
    }

    /// Adds or updates a node. Returns whether something that can make a pending pod fit
    /// changed (a new node; allocatable, labels, taints, readiness or cordon changed).
    pub fn apply_node(&mut self, node: &Node) -> bool {
        let facts = NodeFacts::from_node(node);
        let i = self.slot(&facts.name);
        let old = self.nodes[i].facts.take();
        let changed = old.as_ref() != Some(&facts);
        if old.is_none() {
            self.real_nodes += 1;
        }
        self.zone_delta(old.as_ref(), -1);
        self.zone_delta(Some(&facts), 1);
        self.nodes[i].facts = Some(facts);
        changed
    }

    /// Removes a node (its pods stay accounted until they go).
    pub fn delete_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if let Some(old) = self.nodes[i].facts.take() {
            self.real_nodes -= 1;
            self.zone_delta(Some(&old), -1);
        }
        self.drop_slot_if_empty(name);
    }

    /// Names of all nodes the watch has shown.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.facts.as_ref().map(|f| f.name.clone()))
            .collect()
    }

    /// Takes a pod from the watch. Returns whether room was freed (a placed pod went away
    /// or finished).
    pub fn apply_pod(&mut self, pod: &Pod) -> bool {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminal = matches!(phase, Some("Succeeded" | "Failed"));
        let facts = PodFacts::from_pod(pod);
        if node.is_empty() {
            // Unbound: an assumed pod stays assumed until its binding shows up (or fails).
            let freed = match self.pods.get(&facts.key) {
                Some(p) if p.assumed => return false,
                Some(_) => self.remove_pod(&facts.key),
                None => false,
            };
            let nominated = pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref())
                .filter(|n| !n.is_empty());
            // An update without a nomination keeps the one this scheduler just made (the
            // write may not have shown up yet); deletion or the end of the pod drops it.
            return match nominated {
                _ if terminal || facts.terminating => self.unnominate(&facts.key) || freed,
                Some(n) => {
                    let n = n.to_owned();
                    self.nominate(Arc::new(facts), &n);
                    freed
                }
                None => freed,
            };
        }
        self.unnominate(&facts.key);
        if terminal {
            return self.remove_pod(&facts.key);
        }
        if let Some(old) = self.pods.get(&facts.key) {
            if old.node == node && !old.assumed && old.facts.uid == facts.uid {
                // Requests, ports and owner of a bound pod do not change; labels, deletion
                // and start time might.
                let (a, b) = (&old.facts, &facts);
                if a.labels == b.labels
                    && a.terminating == b.terminating
                    && a.preempted == b.preempted
                    && a.start == b.start
                {
                    return false;
                }
            }
        }
        self.remove_pod(&facts.key);
        self.insert(node, Arc::new(facts), false);
        false
    }

    fn insert(&mut self, node: String, facts: Arc<PodFacts>, assumed: bool) {
        let i = self.slot(&node);
        self.nodes[i].add(facts.clone());
        if !facts.anti_affinity.is_empty() {
            self.anti_affinity.insert(facts.key.clone());
        }
        self.pods.insert(
            facts.key.clone(),
            Placed {
                node,
                facts,
                assumed,
            },
        );
    }

    /// Removes a pod. Returns whether it was placed (so room was freed).
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let unnominated = self.unnominate(key);
        let Some(placed) = self.pods.remove(key) else {
            return unnominated;
        };
        self.anti_affinity.remove(key);
        if let Some(&i) = self.index.get(&placed.node) {
            self.nodes[i].remove(key);
        }
        self.drop_slot_if_empty(&placed.node);
        true
    }

    /// Counts `pod` on `node` from now on, before the binding is confirmed.
    pub fn assume(&mut self, pod: Arc<PodFacts>, node: &str) {
        self.remove_pod(&pod.key);
        self.insert(node.to_owned(), pod, true);
    }

    /// Undoes [`Cache::assume`] after a failed binding (a confirmed pod stays).
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.remove_pod(key);
        }
    }

    /// Whether `key` is assumed or placed.
    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Reserves room on `node` for a pending pod that preempted there: pods of lower or
    /// equal priority must leave it that room (upstream's nominated pods).
    pub fn nominate(&mut self, pod: Arc<PodFacts>, node: &str) {
        self.unnominate(&pod.key);
        self.nominated_node.insert(pod.key.clone(), node.to_owned());
        self.nominated
            .entry(node.to_owned())
            .or_default()
            .insert(pod.key.clone(), pod);
    }

    /// Drops a nomination. Returns whether there was one.
    pub fn unnominate(&mut self, key: &str) -> bool {
        let Some(node) = self.nominated_node.remove(key) else {
            return false;
        };
        if let Some(pods) = self.nominated.get_mut(&node) {
            pods.remove(key);
            if pods.is_empty() {
                self.nominated.remove(&node);
            }
        }
        true
    }

    /// The node `key` is nominated to.
    pub fn nominated_node(&self, key: &str) -> Option<&str> {
        self.nominated_node.get(key).map(String::as_str)
    }

    /// The pods nominated to `node`.
    pub fn nominated_on(&self, node: &str) -> impl Iterator<Item = &Arc<PodFacts>> {
        self.nominated
            .get(node)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Counts a placed pod as terminating by preemption before the watch shows it, so the
    /// next decisions neither pick it again nor preempt more for the same pod.
    pub fn mark_preempted(&mut self, key: &str) {
        let Some(placed) = self.pods.get_mut(key) else {
            return;
        };
        let mut facts = (*placed.facts).clone();
        facts.terminating = true;
        facts.preempted = true;
        let facts = Arc::new(facts);
        placed.facts = facts.clone();
        if let Some(&i) = self.index.get(&placed.node) {
            self.nodes[i].pods.insert(key.to_owned(), facts);
        }
    }

    /// Starts over (after a watch restart): nodes and pods come back through `apply_*`.
    pub fn retain_nodes(&mut self, keep: &HashSet<String>) {
        for name in self.node_names() {
            if !keep.contains(&name) {
                self.delete_node(&name);
            }
        }
    }

    /// Drops confirmed pods not in `keep` (after a watch restart); assumed ones stay.
    pub fn retain_pods(&mut self, keep: &HashSet<String>) {
        let gone: Vec<String> = self
            .pods
            .iter()
            .filter(|(k, p)| !p.assumed && !keep.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.remove_pod(&k);
        }
        let unnominated: Vec<String> = self
            .nominated_node
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in unnominated {
            self.unnominate(&k);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn node(name: &str, cpu: &str, mem: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(HOSTNAME.to_owned(), name.to_owned())])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity(cpu.into())),
                    ("memory".to_owned(), Quantity(mem.into())),
                    ("pods".to_owned(), Quantity("110".into())),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    pub(crate) fn pod(name: &str, cpu: &str, mem: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![super::super::resources::tests::container(cpu, mem)],
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn bound(mut p: Pod, node: &str) -> Pod {
        if let Some(s) = p.spec.as_mut() {
            s.node_name = Some(node.into());
        }
        p
    }

    #[test]
    fn requests_are_summed_incrementally_and_assumptions_confirmed_or_forgotten() {
        let mut c = Cache::default();
        assert!(c.apply_node(&node("a", "4", "8Gi")));
        assert!(!c.apply_node(&node("a", "4", "8Gi")));
        c.apply_pod(&bound(pod("p1", "1", "1Gi"), "a"));
        c.apply_pod(&bound(pod("p1", "1", "1Gi"), "a"));
        let a = c.node("a").unwrap();
        assert_eq!((a.requested.milli_cpu, a.requested.pods), (1000, 1));

        let facts = Arc::new(PodFacts::from_pod(&pod("p2", "500m", "")));
        c.assume(facts, "a");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1500);
        // The watch still shows it unbound: stays assumed.
        c.apply_pod(&pod("p2", "500m", ""));
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1500);
        // Confirmed, then forget is a no-op.
        c.apply_pod(&bound(pod("p2", "500m", ""), "a"));
        c.forget("default/p2");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1500);
        // A finished pod frees its room.
        let mut done = bound(pod("p1", "1", "1Gi"), "a");
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert!(c.apply_pod(&done));
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 500);

        let facts = Arc::new(PodFacts::from_pod(&pod("p3", "1", "")));
        c.assume(facts, "a");
        c.forget("default/p3");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 500);
    }

    #[test]
    fn pods_before_their_node_and_node_removal() {
        let mut c = Cache::default();
        c.apply_pod(&bound(pod("p1", "1", ""), "b"));
        assert_eq!(c.node_count(), 0);
        c.apply_node(&node("a", "4", "8Gi"));
        c.apply_node(&node("b", "4", "8Gi"));
        assert_eq!(c.node_count(), 2);
        assert_eq!(c.node("b").unwrap().requested.milli_cpu, 1000);
        c.delete_node("a");
        assert_eq!(c.node_count(), 1);
        assert!(c.node("a").is_none());
        assert_eq!(c.node("b").unwrap().requested.milli_cpu, 1000);
        c.delete_node("b");
        assert!(c.node("b").is_some());
        c.remove_pod("default/p1");
        assert!(c.node("b").is_none());
        assert!(c.slots().is_empty());
    }

    #[test]
    fn nominations_follow_the_watch() {
        use k8s_openapi::api::core::v1::PodStatus;
        let mut c = Cache::default();
        c.apply_node(&node("a", "4", "8Gi"));
        let mut p = pod("p", "1", "");
        p.status = Some(PodStatus {
            nominated_node_name: Some("a".into()),
            ..Default::default()
        });
        c.apply_pod(&p);
        assert_eq!(c.nominated_node("default/p"), Some("a"));
        assert_eq!(c.nominated_on("a").count(), 1);
        // An update that does not (yet) show the nomination keeps it.
        c.apply_pod(&pod("p", "1", ""));
        assert_eq!(c.nominated_node("default/p"), Some("a"));
        // Bound: the reservation becomes the pod itself.
        c.apply_pod(&bound(pod("p", "1", ""), "a"));
        assert_eq!(c.nominated_node("default/p"), None);
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1000);
        // A pending pod being deleted gives its room back.
        let mut q = p.clone();
        q.metadata.name = Some("q".into());
        c.apply_pod(&q);
        assert_eq!(c.nominated_on("a").count(), 1);
        q.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert!(c.apply_pod(&q));
        assert_eq!(c.nominated_on("a").count(), 0);
        // Marking a victim: terminating by preemption at once.
        c.mark_preempted("default/p");
        assert!(c.node("a").unwrap().pods["default/p"].preempted);
    }

    #[test]
    fn not_ready_nodes_get_the_taint() {
        let mut n = node("a", "1", "1Gi");
        n.status.as_mut().unwrap().conditions = None;
        let f = NodeFacts::from_node(&n);
        assert_eq!(f.taints.len(), 1);
        assert_eq!(f.taints[0].key, NOT_READY);
        n.status.as_mut().unwrap().conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            ..Default::default()
        }]);
        assert_eq!(NodeFacts::from_node(&n).taints[0].key, UNREACHABLE);
    }
}
