//! The node lifecycle controller, as upstream's: node health from heartbeats, the taints
//! that follow a node's conditions, taint-based eviction, and pod garbage collection.
//!
//! * **Health.** A node is alive while its Lease in `kube-node-lease` is renewed or its
//!   Ready condition's `lastHeartbeatTime` moves. Like upstream, the controller judges
//!   by when *it* saw a heartbeat arrive ([`Probe`], [`observe`]), not by the node's
//!   clock. One periodic pass ([`MONITOR_PERIOD`]) looks at every node; a node silent
//!   for longer than `--node-monitor-grace-period` gets every condition (Ready,
//!   MemoryPressure, DiskPressure, PIDPressure) set to Unknown/`NodeStatusUnknown`
//!   through `nodes/status` ([`reconcile_node`]), and the pods on it are marked not
//!   ready.
//! * **Taints.** `node.kubernetes.io/not-ready` (Ready=False) and
//!   `node.kubernetes.io/unreachable` (Ready=Unknown) as both NoSchedule and NoExecute,
//!   the pressure and network conditions and `spec.unschedulable` (cordon) as NoSchedule;
//!   all removed when the condition clears. When no node at all is ready (upstream's
//!   full disruption: the control plane is more likely cut off than every node dead),
//!   the NoExecute ones are held back so nothing gets evicted.
//! * **Taint-based eviction** ([`verdict`]): a pod on a node with a NoExecute taint it
//!   does not tolerate is deleted at once; one that tolerates it for `tolerationSeconds`
//!   is deleted when that has passed since the taint's `timeAdded`. Deletion is
//!   graceful, so on an unreachable node the pod stays Terminating (nothing finishes
//!   it), while its controller already counts it gone and makes a replacement.
//! * **Pod GC** ([`plan_gc`]): pods bound to a node that no longer exists (after a
//!   [`QUARANTINE`] and a live look-up), terminating pods on out-of-service nodes,
//!   unscheduled terminating pods, and the oldest finished pods beyond
//!   [`TERMINATED_THRESHOLD`] are marked Failed and deleted.
//!
//! The decisions are pure functions over plain values; [`NodeLifecycleController`] is
//! the driver: one queue of [`Work`], caches in, API calls out.

use super::driver::{self, Caches, Clock, Effects, Key, Kind, Next, Queue, Reconciler};
use super::events::{EventType, Recorder};
use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Node, NodeCondition, ObjectReference, Pod, PodCondition, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The taint of a node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (it stopped reporting).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node (`spec.unschedulable`).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint an administrator puts on a node known to be shut down: its terminating
/// pods may then be removed without waiting for it.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Where nodes keep their heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often every node's heartbeats are checked (upstream's `--node-monitor-period`).
pub const MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// How long a node that never posted its status gets (upstream's
/// `--node-startup-grace-period`).
pub const STARTUP_GRACE: Duration = Duration::from_secs(60);
/// How often pod garbage collection runs (upstream's gcCheckPeriod).
pub const GC_PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing before its pods count as orphaned (upstream's).
pub const QUARANTINE: Duration = Duration::from_secs(40);
/// How many finished pods are kept before the oldest are deleted (upstream's
/// `--terminated-pod-gc-threshold`).
pub const TERMINATED_THRESHOLD: usize = 12_500;
/// Nodes with this label are left out of the "is every node down" judgement.
const EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";
/// The conditions set to Unknown when a node goes silent. NetworkUnavailable is left
/// alone: the control plane, not the kubelet, owns it.
const HEALTH_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// Which condition status brings which NoSchedule taint (upstream's
/// TaintNodesByCondition).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];
const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";
/// The shortest requeue, so a timer that fires a hair early does not spin.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// One piece of work on the controller's queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// The periodic pass over every node's heartbeats.
    Monitor,
    /// One node's conditions and taints.
    Node(String),
    /// The pods on one node: not-ready marking and taint-based eviction.
    Pods(String),
    /// The periodic pod garbage collection.
    PodGc,
}

// ---------------------------------------------------------------------------
// Health.

/// What the controller last saw of a node's heartbeats, and when (by its own clock)
/// it last saw one arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The Ready condition's `lastHeartbeatTime` last seen.
    pub heartbeat: Option<Timestamp>,
    /// The Lease's `renewTime` last seen.
    pub renewed: Option<Timestamp>,
    /// When a heartbeat was last seen arriving.
    pub at: Timestamp,
}

/// The condition of `type_` on `node`.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of `node`'s Ready condition, if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// Updates what is known of `node`'s heartbeats at `now`, as upstream's
/// `tryUpdateNodeHealth` does: a moved `lastHeartbeatTime` or a renewed Lease is a
/// heartbeat seen now. A node seen for the first time counts from now, or from its
/// creation when it never posted a status (and holds no Lease).
pub fn observe(prev: Option<&Probe>, node: &Node, lease: Option<&Lease>, now: Timestamp) -> Probe {
    let heartbeat = condition(node, "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let Some(prev) = prev else {
        let never_posted = condition(node, "Ready").is_none() && renewed.is_none();
        let at = match &node.metadata.creation_timestamp {
            Some(t) if never_posted => t.0,
            _ => now,
        };
        return Probe {
            heartbeat,
            renewed,
            at,
        };
    };
    let beat = heartbeat != prev.heartbeat;
    let renew = renewed.is_some() && (prev.renewed.is_none() || renewed > prev.renewed);
    Probe {
        heartbeat,
        renewed: if renew { renewed } else { prev.renewed },
        at: if beat || renew { now } else { prev.at },
    }
}

/// The grace a node gets: the longer startup grace until it first posts its status.
pub fn grace_for(node: &Node, grace: Duration) -> Duration {
    if condition(node, "Ready").is_none() {
        STARTUP_GRACE
    } else {
        grace
    }
}

/// When a node seen alive at `probe.at` turns silent.
fn silent_after(probe: &Probe, grace: Duration) -> Timestamp {
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    probe.at.checked_add(grace).unwrap_or(Timestamp::MAX)
}

/// What a sync does to one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    /// The conditions to write through `nodes/status`: the node went silent.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The Ready status after the sync (`None`: the node never posted one).
    pub ready: Option<String>,
    /// The taints to write, when they must change.
    pub taints: Option<Vec<Taint>>,
    /// Whether the node carries a NoExecute taint after the sync.
    pub no_execute: bool,
}

/// Decides one sync of `node`: conditions to Unknown when it has been silent for
/// longer than `grace` (from `probe`), and the taints its conditions call for.
/// `all_down` (no node in the cluster is ready) holds back the NoExecute taints.
pub fn reconcile_node(
    node: &Node,
    probe: &Probe,
    grace: Duration,
    all_down: bool,
    now: Timestamp,
) -> NodePlan {
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    if now > silent_after(probe, grace_for(node, grace)) {
        for type_ in HEALTH_CONDITIONS {
            match conditions.iter_mut().find(|c| c.type_ == type_) {
                None => {
                    conditions.push(NodeCondition {
                        type_: type_.to_string(),
                        status: "Unknown".into(),
                        reason: Some("NodeStatusNeverUpdated".into()),
                        message: Some("Kubelet never posted node status.".into()),
                        last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                        last_transition_time: Some(Time(now)),
                    });
                    changed = true;
                }
                Some(c) if c.status != "Unknown" => {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(Time(now));
                    changed = true;
                }
                Some(_) => {}
            }
        }
    }
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone());
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let wanted = wanted_taints(&conditions, unschedulable, !all_down);
    let existing = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let taints = merge_taints(&existing, &wanted, now);
    let no_execute = taints.iter().any(|t| t.effect == NO_EXECUTE);
    NodePlan {
        conditions: changed.then_some(conditions),
        ready,
        taints: (taints != existing).then_some(taints),
        no_execute,
    }
}

/// Whether the controller owns `taint` (adds and removes it by the node's state).
fn managed(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        NO_SCHEDULE => {
            taint.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == taint.key)
        }
        NO_EXECUTE => taint.key == NOT_READY || taint.key == UNREACHABLE,
        _ => false,
    }
}

/// The controller's taints (key, effect) that `conditions` and cordoning call for.
fn wanted_taints(
    conditions: &[NodeCondition],
    unschedulable: bool,
    no_execute: bool,
) -> Vec<(&'static str, &'static str)> {
    let mut wanted = Vec::new();
    for (type_, status, key) in CONDITION_TAINTS {
        if conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
        {
            wanted.push((key, NO_SCHEDULE));
        }
    }
    if unschedulable {
        wanted.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    if no_execute {
        match conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str())
        {
            Some("False") => wanted.push((NOT_READY, NO_EXECUTE)),
            Some("Unknown") => wanted.push((UNREACHABLE, NO_EXECUTE)),
            _ => {}
        }
    }
    wanted
}

/// `existing` with the controller's taints made `wanted`: other taints stay as they
/// are and where they are, kept ones keep their `timeAdded`, new ones are appended
/// with `timeAdded` now (as upstream's taint swap does).
fn merge_taints(existing: &[Taint], wanted: &[(&str, &str)], now: Timestamp) -> Vec<Taint> {
    let mut out: Vec<Taint> = existing
        .iter()
        .filter(|t| !managed(t) || wanted.iter().any(|(k, e)| *k == t.key && *e == t.effect))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                value: None,
                time_added: Some(Time(now)),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Taint-based eviction.

/// What happens to a pod on a node with NoExecute taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It stays (no NoExecute taint, or tolerated without a time limit).
    Stay,
    /// It is deleted now.
    EvictNow,
    /// It is deleted at this time, unless the taints change before.
    EvictAt(Timestamp),
}

/// Whether `t` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// Decides what the NoExecute `taints` (each with the time it was added) mean for a pod
/// with `tolerations`, at `now`: each taint must be tolerated (by the first toleration
/// that matches it, as upstream picks), and the pod may stay until the earliest
/// `timeAdded + tolerationSeconds`; a toleration without seconds tolerates for ever, one
/// with zero or fewer not at all.
pub fn verdict(
    tolerations: &[Toleration],
    taints: &[(Taint, Timestamp)],
    now: Timestamp,
) -> Verdict {
    let mut due: Option<Timestamp> = None;
    for (taint, since) in taints {
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::EvictNow;
        };
        match t.toleration_seconds {
            None => {}
            Some(s) if s <= 0 => return Verdict::EvictNow,
            Some(s) => {
                let at = since
                    .checked_add(SignedDuration::from_secs(s))
                    .unwrap_or(Timestamp::MAX);
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
    }
    match due {
        None => Verdict::Stay,
        Some(at) if at <= now => Verdict::EvictNow,
        Some(at) => Verdict::EvictAt(at),
    }
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn node_name_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn phase_of(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// What a sync does to the pods on one node.
#[derive(Debug, Default)]
pub struct PodsPlan<'a> {
    /// Pods whose Ready condition goes False (their node stopped being ready).
    pub mark_not_ready: Vec<&'a Pod>,
    /// Pods deleted now.
    pub evict: Vec<&'a Pod>,
    /// Pods deleted later, with when.
    pub pending: BTreeMap<Key, Timestamp>,
}

/// Decides for the `pods` on a node with NoExecute `taints`; `mark` says the node is not
/// ready and its ready pods must be marked not ready. Pods already being deleted are
/// left alone.
pub fn reconcile_pods<'a>(
    pods: &'a [Arc<Pod>],
    taints: &[(Taint, Timestamp)],
    mark: bool,
    now: Timestamp,
) -> PodsPlan<'a> {
    let mut plan = PodsPlan::default();
    for pod in pods.iter().map(Arc::as_ref) {
        if mark && pod_ready(pod) {
            plan.mark_not_ready.push(pod);
        }
        if pod.metadata.deletion_timestamp.is_some() || taints.is_empty() {
            continue;
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        match verdict(tolerations, taints, now) {
            Verdict::Stay => {}
            Verdict::EvictNow => plan.evict.push(pod),
            Verdict::EvictAt(at) => {
                plan.pending.insert(Key::of(&pod.metadata), at);
            }
        }
    }
    plan
}

/// `pod` with `cond` set as upstream's `UpdatePodCondition` sets it (the transition
/// time moves only when the status does); `None` when nothing changes.
pub fn with_pod_condition(pod: &Pod, mut cond: PodCondition, now: Timestamp) -> Option<Pod> {
    let mut pod = pod.clone();
    let status = pod.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    cond.last_transition_time = Some(Time(now));
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        None => conditions.push(cond),
        Some(old) => {
            if old.status == cond.status {
                cond.last_transition_time = old.last_transition_time.clone();
            }
            if *old == cond {
                return None;
            }
            *old = cond;
        }
    }
    Some(pod)
}

// ---------------------------------------------------------------------------
// Pod garbage collection.

/// What one pod garbage collection pass deletes.
#[derive(Debug, Default)]
pub struct GcPlan<'a> {
    /// Finished pods beyond the threshold, evicted ones first, then oldest first.
    pub terminated: Vec<&'a Pod>,
    /// Terminating pods on nodes that are not ready and out of service.
    pub out_of_service: Vec<&'a Pod>,
    /// Terminating pods that were never scheduled.
    pub unscheduled_terminating: Vec<&'a Pod>,
    /// Nodes pods are bound to that have been missing for the whole quarantine: look
    /// them up, and if really gone, their pods are orphans.
    pub missing_nodes: Vec<String>,
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(phase_of(pod), "Succeeded" | "Failed")
}

/// Plans a pass over `pods` and the node names in `nodes` at `now`. `quarantine`
/// remembers since when each missing node has been missing; it is updated here.
pub fn plan_gc<'a>(
    pods: &'a [Arc<Pod>],
    nodes: &HashMap<String, Arc<Node>>,
    quarantine: &mut HashMap<String, Timestamp>,
    threshold: usize,
    now: Timestamp,
) -> GcPlan<'a> {
    let mut plan = GcPlan::default();

    let mut finished: Vec<&Pod> = pods
        .iter()
        .map(Arc::as_ref)
        .filter(|p| is_terminated(p))
        .collect();
    if finished.len() > threshold {
        finished.sort_by_cached_key(|p| {
            let evicted = p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
            (
                !evicted,
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.name_any(),
            )
        });
        let n = finished.len() - threshold;
        plan.terminated = finished.into_iter().take(n).collect();
    }

    let mut referenced = HashSet::new();
    for pod in pods.iter().map(Arc::as_ref) {
        let node_name = node_name_of(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if node_name.is_empty() {
            if terminating {
                plan.unscheduled_terminating.push(pod);
            }
            continue;
        }
        match nodes.get(node_name) {
            Some(node) => {
                let out_of_service = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_deref())
                    .unwrap_or_default()
                    .iter()
                    .any(|t| t.key == OUT_OF_SERVICE);
                if terminating && out_of_service && ready_status(node) != Some("True") {
                    plan.out_of_service.push(pod);
                }
            }
            None => {
                referenced.insert(node_name.to_string());
            }
        }
    }
    quarantine.retain(|name, _| referenced.contains(name));
    let wait = SignedDuration::try_from(QUARANTINE).unwrap_or(SignedDuration::MAX);
    for name in referenced {
        let since = *quarantine.entry(name.clone()).or_insert(now);
        if since.checked_add(wait).unwrap_or(Timestamp::MAX) <= now {
            plan.missing_nodes.push(name);
        }
    }
    plan.missing_nodes.sort();
    plan
}

// ---------------------------------------------------------------------------
// The driver.

/// Registers the controller's hooks and returns its workers.
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    NodeLifecycleController::watch(&ctx.caches, &queue);
    let controller = NodeLifecycleController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("node-controller"),
        ctx.recorder("taint-eviction-controller"),
        queue.clone(),
        ctx.config.node_monitor_grace_period,
    );
    queue.add(Work::Monitor);
    queue.add(Work::PodGc);
    ctx.workers(controller, queue, 4)
}

/// What the controller remembers between syncs.
#[derive(Default)]
struct State {
    /// Heartbeats seen, per node.
    health: HashMap<String, Probe>,
    /// Nodes announced with RegisteredNode, with their uids (for RemovingNode).
    known: HashMap<String, String>,
    /// No node is ready: NoExecute taints are held back.
    all_down: bool,
    /// Nodes whose pods must still be marked not ready.
    mark_pending: HashSet<String>,
    /// Per node, the pods whose deletion is scheduled, with when.
    scheduled: HashMap<String, BTreeMap<Key, Timestamp>>,
    /// When NoExecute taints without `timeAdded` were first seen, per (node, key).
    taint_seen: HashMap<(String, String), Timestamp>,
    /// Since when each node that pods are bound to has been missing.
    quarantine: HashMap<String, Timestamp>,
}

/// The controller: caches in, API calls out.
pub struct NodeLifecycleController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    node_events: Arc<Recorder>,
    eviction_events: Arc<Recorder>,
    queue: Arc<Queue<Work>>,
    grace: Duration,
    state: Mutex<State>,
}

fn node_ref(name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn gone_or_changed(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl NodeLifecycleController {
    /// A controller over `caches`, writing through `effects`; a node is silent after
    /// `grace` without heartbeats.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        node_events: Arc<Recorder>,
        eviction_events: Arc<Recorder>,
        queue: Arc<Queue<Work>>,
        grace: Duration,
    ) -> Arc<Self> {
        Arc::new(NodeLifecycleController {
            caches,
            effects,
            clock,
            node_events,
            eviction_events,
            queue,
            grace,
            state: Mutex::new(State::default()),
        })
    }

    /// Registers the cache hooks that fill `queue`: a node's changes, and changes of
    /// pods on nodes with NoExecute taints or gone silent.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Work>>) {
        let q = queue.clone();
        caches.nodes.on_change(Box::new(move |node: &Node, _| {
            q.add(Work::Node(node.name_any()))
        }));
        let (q, nodes) = (queue.clone(), caches.nodes.clone());
        caches.pods.on_change(Box::new(move |pod: &Pod, change| {
            let name = node_name_of(pod);
            if name.is_empty() || change == driver::Change::Deleted {
                return;
            }
            let Some(node) = nodes.get("", name) else {
                return;
            };
            let tainted = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or_default()
                .iter()
                .any(|t| t.effect == NO_EXECUTE);
            if tainted || ready_status(&node) == Some("Unknown") {
                q.add(Work::Pods(name.to_string()));
            }
        }));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain maps: a panic elsewhere cannot leave them inconsistent in
        // a way that matters more than stopping would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self, node: &str) -> Option<Arc<Lease>> {
        self.caches.leases.get(LEASE_NAMESPACE, node)
    }

    /// The periodic pass: notes heartbeats, queues the nodes gone silent, and notices
    /// when the whole cluster is (or stops being) down.
    async fn monitor(&self) -> driver::Result<Next> {
        let now = self.clock.now();
        let nodes = self.caches.nodes.store().state();
        let mut silent = Vec::new();
        let (mut ready, mut not_ready) = (0usize, 0usize);
        let flipped = {
            let mut st = self.state();
            for node in &nodes {
                let name = node.name_any();
                let lease = self.lease(&name);
                let probe = observe(st.health.get(&name), node, lease.as_deref(), now);
                let plan = reconcile_node(node, &probe, self.grace, st.all_down, now);
                if plan.conditions.is_some() {
                    silent.push(name.clone());
                }
                st.health.insert(name, probe);
                // Judged as the node will be once marked, so that when the last nodes
                // go silent together, no NoExecute taint comes before the hold.
                if !node.labels().contains_key(EXCLUDE_DISRUPTION) {
                    if plan.ready.as_deref() == Some("True") {
                        ready += 1;
                    } else {
                        not_ready += 1;
                    }
                }
            }
            let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
            st.health.retain(|n, _| names.contains(n));
            let all_down = ready == 0 && not_ready > 0;
            let flipped = all_down != st.all_down;
            st.all_down = all_down;
            flipped
        };
        if flipped {
            if ready == 0 {
                tracing::info!("no node is ready: holding back NoExecute taints");
            } else {
                tracing::info!("some nodes are ready again: NoExecute taints resume");
            }
            for node in &nodes {
                self.queue.add(Work::Node(node.name_any()));
            }
        }
        for name in silent {
            self.queue.add(Work::Node(name));
        }
        Ok(Next::After(MONITOR_PERIOD))
    }

    async fn sync_node(&self, name: &str) -> driver::Result<Next> {
        let Some(node) = self.caches.nodes.get("", name) else {
            let uid = {
                let mut st = self.state();
                st.health.remove(name);
                st.mark_pending.remove(name);
                st.scheduled.remove(name);
                st.taint_seen.retain(|(n, _), _| n != name);
                st.known.remove(name)
            };
            if let Some(uid) = uid {
                let msg = format!("Node {name} event: Removing Node {name} from Controller");
                self.node_events
                    .record(
                        &node_ref(name, &uid),
                        EventType::Normal,
                        "RemovingNode",
                        &msg,
                    )
                    .await;
            }
            return Ok(Next::Done);
        };
        let uid = node.metadata.uid.clone().unwrap_or_default();
        let now = self.clock.now();
        let lease = self.lease(name);
        let (first, plan) = {
            let mut st = self.state();
            let first = st.known.insert(name.to_string(), uid.clone()).as_ref() != Some(&uid);
            let probe = observe(st.health.get(name), &node, lease.as_deref(), now);
            let plan = reconcile_node(&node, &probe, self.grace, st.all_down, now);
            st.health.insert(name.to_string(), probe);
            (first, plan)
        };
        if first {
            let msg = format!("Node {name} event: Registered Node {name} in Controller");
            self.node_events
                .record(
                    &node_ref(name, &uid),
                    EventType::Normal,
                    "RegisteredNode",
                    &msg,
                )
                .await;
        }
        let kind = Kind::of::<Node>(false);
        let mut rv = node.metadata.resource_version.clone();
        if let Some(conditions) = plan.conditions.clone() {
            let mut body = (*node).clone();
            body.status.get_or_insert_with(Default::default).conditions = Some(conditions);
            let body =
                serde_json::to_value(&body).map_err(|e| driver::Error::Encode("Node".into(), e))?;
            match self.effects.replace_status(&kind, "", name, body).await {
                Ok(written) => {
                    rv = written
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                // A newer node is on its way through the watch and brings us back.
                Err(e) if gone_or_changed(&e) => return Ok(Next::Done),
                Err(e) => return Err(driver::api_error("update status of", &kind, "", name)(e)),
            }
            tracing::info!(
                node = name,
                "node stopped posting its status: marked Unknown"
            );
            if ready_status(&node) == Some("True") && plan.ready.as_deref() != Some("True") {
                let msg = format!("Node {name} status is now: NodeNotReady");
                self.node_events
                    .record(
                        &node_ref(name, &uid),
                        EventType::Normal,
                        "NodeNotReady",
                        &msg,
                    )
                    .await;
                self.state().mark_pending.insert(name.to_string());
            }
        }
        if let Some(taints) = &plan.taints {
            let taints = if taints.is_empty() {
                Value::Null
            } else {
                json!(taints)
            };
            let patch = json!({
                "metadata": {"resourceVersion": rv},
                "spec": {"taints": taints},
            });
            match self.effects.merge_patch(&kind, "", name, patch).await {
                Ok(_) => {}
                Err(e) if gone_or_changed(&e) => return Ok(Next::Done),
                Err(e) => return Err(driver::api_error("taint", &kind, "", name)(e)),
            }
        }
        let pods_need_care = {
            let st = self.state();
            plan.no_execute
                || plan.ready.as_deref() == Some("Unknown")
                || st.mark_pending.contains(name)
                || st.scheduled.get(name).is_some_and(|s| !s.is_empty())
        };
        if pods_need_care {
            self.queue.add(Work::Pods(name.to_string()));
        }
        Ok(Next::Done)
    }

    async fn sync_pods(&self, name: &str) -> driver::Result<Next> {
        let Some(node) = self.caches.nodes.get("", name) else {
            let mut st = self.state();
            st.scheduled.remove(name);
            st.mark_pending.remove(name);
            return Ok(Next::Done);
        };
        let now = self.clock.now();
        let ready = ready_status(&node).map(str::to_string);
        let (taints, mark) = {
            let mut st = self.state();
            let mut taints = Vec::new();
            let mut keys = HashSet::new();
            for t in node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or_default()
                .iter()
                .filter(|t| t.effect == NO_EXECUTE)
            {
                let since = match &t.time_added {
                    Some(at) => at.0,
                    None => *st
                        .taint_seen
                        .entry((name.to_string(), t.key.clone()))
                        .or_insert(now),
                };
                keys.insert(t.key.clone());
                taints.push((t.clone(), since));
            }
            st.taint_seen
                .retain(|(n, k), _| n != name || keys.contains(k));
            let not_ready = ready.as_deref() != Some("True");
            if !not_ready {
                st.mark_pending.remove(name);
            }
            let mark = not_ready
                && (st.mark_pending.contains(name) || ready.as_deref() == Some("Unknown"));
            (taints, mark)
        };
        let pods: Vec<Arc<Pod>> = self
            .caches
            .pods
            .store()
            .state()
            .into_iter()
            .filter(|p| node_name_of(p) == name)
            .collect();
        let plan = reconcile_pods(&pods, &taints, mark, now);

        let mut retry = false;
        for pod in &plan.mark_not_ready {
            retry |= !self.mark_not_ready(pod, now).await?;
        }
        if mark && !retry {
            self.state().mark_pending.remove(name);
        }
        let mut evicted = HashSet::new();
        for pod in &plan.evict {
            self.evict(pod, now).await?;
            evicted.insert(Key::of(&pod.metadata));
        }
        let before = self
            .state()
            .scheduled
            .insert(name.to_string(), plan.pending.clone())
            .unwrap_or_default();
        for key in before.keys() {
            if plan.pending.contains_key(key) || evicted.contains(key) {
                continue;
            }
            let still = pods
                .iter()
                .find(|p| Key::of(&p.metadata) == *key)
                .filter(|p| p.metadata.deletion_timestamp.is_none());
            if let Some(pod) = still {
                let msg = format!("Cancelling deletion of Pod {}/{}", key.namespace, key.name);
                self.eviction_events
                    .record(
                        &pod_ref(pod),
                        EventType::Normal,
                        "TaintManagerEviction",
                        &msg,
                    )
                    .await;
            }
        }
        if plan.pending.is_empty() {
            self.state().scheduled.remove(name);
        }
        let mut next = Next::Done;
        if let Some(at) = plan.pending.values().min() {
            let wait = at.duration_since(now).unsigned_abs().max(MIN_WAIT);
            next = Next::After(wait);
        }
        if retry {
            next = next.min(Next::After(Duration::from_secs(1)));
        }
        Ok(next)
    }

    /// Sets a pod's Ready condition False, as upstream's `MarkPodsNotReady`. Answers
    /// false when the pod changed meanwhile (try again).
    async fn mark_not_ready(&self, pod: &Pod, now: Timestamp) -> driver::Result<bool> {
        let Some(mut cond) = pod_condition(pod, "Ready").cloned() else {
            return Ok(true);
        };
        cond.status = "False".into();
        let Some(updated) = with_pod_condition(pod, cond, now) else {
            return Ok(true);
        };
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let kind = Kind::pods();
        let body =
            serde_json::to_value(&updated).map_err(|e| driver::Error::Encode("Pod".into(), e))?;
        match self.effects.replace_status(&kind, &ns, &name, body).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(false),
            Err(e) => return Err(driver::api_error("update status of", &kind, &ns, &name)(e)),
        }
        self.node_events
            .record(
                &pod_ref(pod),
                EventType::Warning,
                "NodeNotReady",
                "Node is not ready",
            )
            .await;
        Ok(true)
    }

    /// Deletes a pod for a NoExecute taint: the event, the DisruptionTarget condition,
    /// then a graceful deletion (as upstream's taint eviction controller).
    async fn evict(&self, pod: &Pod, now: Timestamp) -> driver::Result<()> {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        tracing::info!(pod = %format!("{ns}/{name}"), node = node_name_of(pod), "evicting for a NoExecute taint");
        let msg = format!("Marking for deletion Pod {ns}/{name}");
        self.eviction_events
            .record(
                &pod_ref(pod),
                EventType::Normal,
                "TaintManagerEviction",
                &msg,
            )
            .await;
        let kind = Kind::pods();
        let cond = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            ..Default::default()
        };
        if let Some(updated) = with_pod_condition(pod, cond, now) {
            let body = serde_json::to_value(&updated)
                .map_err(|e| driver::Error::Encode("Pod".into(), e))?;
            match self.effects.replace_status(&kind, &ns, &name, body).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                // Changed meanwhile: the deletion matters more than the condition.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(driver::api_error("update status of", &kind, &ns, &name)(e)),
            }
        }
        let uid = pod.metadata.uid.as_deref();
        match self.effects.delete(&kind, &ns, &name, uid, None).await {
            Ok(()) => Ok(()),
            Err(e) if gone_or_changed(&e) => Ok(()),
            Err(e) => Err(driver::api_error("delete", &kind, &ns, &name)(e)),
        }
    }

    /// One pod garbage collection pass.
    async fn pod_gc(&self) -> driver::Result<Next> {
        let now = self.clock.now();
        let pods = self.caches.pods.store().state();
        let nodes: HashMap<String, Arc<Node>> = self
            .caches
            .nodes
            .store()
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();
        let plan = {
            let mut st = self.state();
            plan_gc(&pods, &nodes, &mut st.quarantine, TERMINATED_THRESHOLD, now)
        };
        if !plan.terminated.is_empty() {
            tracing::info!(
                pods = plan.terminated.len(),
                "garbage collecting finished pods"
            );
        }
        for pod in plan
            .terminated
            .iter()
            .chain(&plan.out_of_service)
            .chain(&plan.unscheduled_terminating)
        {
            self.force_delete(pod, None, now).await;
        }
        let mut gone = HashSet::new();
        let kind = Kind::of::<Node>(false);
        for name in &plan.missing_nodes {
            match self.effects.get(&kind, "", name).await {
                Ok(None) => {
                    gone.insert(name.clone());
                }
                Ok(Some(_)) => {
                    self.state().quarantine.remove(name);
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "looking up a missing node");
                }
            }
        }
        for pod in pods.iter().filter(|p| gone.contains(node_name_of(p))) {
            tracing::info!(pod = %pod.name_any(), node = node_name_of(pod), "deleting a pod whose node is gone");
            let cond = PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByPodGC".into()),
                message: Some("PodGC: node no longer exists".into()),
                ..Default::default()
            };
            self.force_delete(pod, Some(cond), now).await;
        }
        Ok(Next::After(GC_PERIOD))
    }

    /// Marks a pod Failed (with `cond`) unless it finished, then deletes it, as
    /// upstream's pod GC does. Failures are logged; the next pass tries again.
    async fn force_delete(&self, pod: &Pod, cond: Option<PodCondition>, now: Timestamp) {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let kind = Kind::pods();
        if !is_terminated(pod) {
            let mut updated = match cond {
                Some(c) => with_pod_condition(pod, c, now).unwrap_or_else(|| pod.clone()),
                None => pod.clone(),
            };
            updated.status.get_or_insert_with(Default::default).phase = Some("Failed".into());
            let written = match serde_json::to_value(&updated) {
                Ok(body) => self.effects.replace_status(&kind, &ns, &name, body).await,
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "encoding a pod");
                    return;
                }
            };
            if let Err(e) = written {
                if !is_not_found(&e) {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "marking a pod Failed");
                }
                return;
            }
        }
        let uid = pod.metadata.uid.as_deref();
        match self.effects.delete_now(&kind, &ns, &name, uid).await {
            Ok(()) => {}
            Err(e) if gone_or_changed(&e) => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting a pod");
            }
        }
    }
}

impl Reconciler for NodeLifecycleController {
    type Key = Work;

    fn name(&self) -> &'static str {
        "nodelifecycle"
    }

    fn sync<'a>(&'a self, key: &'a Work) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(async move {
            match key {
                Work::Monitor => self.monitor().await,
                Work::Node(name) => self.sync_node(name).await,
                Work::Pods(name) => self.sync_pods(name).await,
                Work::PodGc => self.pod_gc().await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{FixedClock, Recording};
    use crate::controllers::driver::Cache;
    use futures::stream;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use kube::runtime::watcher;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    const GRACE: Duration = Duration::from_secs(40);

    fn cond(type_: &str, status: &str, beat: i64) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some("KubeletReady".into()),
            message: Some("kubelet is posting ready status".into()),
            last_heartbeat_time: Some(Time(t(beat))),
            last_transition_time: Some(Time(t(0))),
        }
    }

    fn node(name: &str, ready: &str, beat: i64) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("7".into()),
                creation_timestamp: Some(Time(t(0))),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    cond("MemoryPressure", "False", beat),
                    cond("DiskPressure", "False", beat),
                    cond("PIDPressure", "False", beat),
                    cond("Ready", ready, beat),
                ]),
                ..Default::default()
            }),
        }
    }

    fn lease(name: &str, renewed: i64) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(LEASE_NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(t(renewed))),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|s| Time(t(s))),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn pod(name: &str, node: &str, tolerations: Vec<Toleration>, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("3".into()),
                creation_timestamp: Some(Time(t(0))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(t(1))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn heartbeats_are_judged_by_when_they_arrive() {
        let n = node("a", "True", 100);
        // First sight counts from now, whatever the node's clock says.
        let p = observe(None, &n, None, t(500));
        assert_eq!(p.at, t(500));
        // Nothing moved: the probe stays.
        let same = observe(Some(&p), &n, None, t(520));
        assert_eq!(same.at, t(500));
        // A renewed lease is a heartbeat now.
        let l = lease("a", 90);
        let renewed = observe(Some(&same), &n, Some(&l), t(530));
        assert_eq!((renewed.at, renewed.renewed), (t(530), Some(t(90))));
        // The same renewal seen again is not.
        assert_eq!(observe(Some(&renewed), &n, Some(&l), t(560)).at, t(530));
        // A moved lastHeartbeatTime is.
        let beat = node("a", "True", 160);
        assert_eq!(observe(Some(&renewed), &beat, Some(&l), t(570)).at, t(570));
        // A node that never posted a status counts from its creation.
        let mut never = n.clone();
        never.status = None;
        assert_eq!(observe(None, &never, None, t(500)).at, t(0));
        assert_eq!(grace_for(&never, GRACE), STARTUP_GRACE);
    }

    #[test]
    fn a_healthy_node_is_left_alone() {
        let n = node("a", "True", 100);
        let probe = observe(None, &n, None, t(100));
        let plan = reconcile_node(&n, &probe, GRACE, false, t(140));
        assert_eq!(plan.conditions, None);
        assert_eq!(plan.taints, None);
        assert_eq!(plan.ready.as_deref(), Some("True"));
    }

    #[test]
    fn a_silent_node_goes_unknown_and_unreachable() {
        let n = node("a", "True", 100);
        let probe = observe(None, &n, None, t(100));
        let plan = reconcile_node(&n, &probe, GRACE, false, t(141));
        let conds = plan.conditions.unwrap();
        assert_eq!(conds.len(), 4);
        for c in &conds {
            assert_eq!(c.status, "Unknown", "{c:?}");
            assert_eq!(c.reason.as_deref(), Some("NodeStatusUnknown"));
            assert_eq!(
                c.message.as_deref(),
                Some("Kubelet stopped posting node status.")
            );
            // The last heartbeat stays what it was; the transition is now.
            assert_eq!(c.last_heartbeat_time, Some(Time(t(100))));
            assert_eq!(c.last_transition_time, Some(Time(t(141))));
        }
        assert_eq!(plan.ready.as_deref(), Some("Unknown"));
        assert_eq!(
            plan.taints.unwrap(),
            vec![
                taint(UNREACHABLE, NO_SCHEDULE, Some(141)),
                taint(UNREACHABLE, NO_EXECUTE, Some(141)),
            ]
        );
        assert!(plan.no_execute);

        // Already Unknown and tainted: nothing more to do, and timeAdded is kept.
        let mut done = n.clone();
        done.status.as_mut().unwrap().conditions = Some(conds);
        done.spec.as_mut().unwrap().taints = Some(vec![
            taint("dedicated", NO_SCHEDULE, None),
            taint(UNREACHABLE, NO_SCHEDULE, Some(141)),
            taint(UNREACHABLE, NO_EXECUTE, Some(141)),
        ]);
        let again = reconcile_node(&done, &probe, GRACE, false, t(200));
        assert_eq!((again.conditions, again.taints), (None, None));

        // Every node down: the NoExecute taint is held back (and removed).
        let down = reconcile_node(&done, &probe, GRACE, true, t(200));
        assert_eq!(
            down.taints.unwrap(),
            vec![
                taint("dedicated", NO_SCHEDULE, None),
                taint(UNREACHABLE, NO_SCHEDULE, Some(141)),
            ]
        );
        assert!(!down.no_execute);

        // Back: the kubelet posted Ready again; the controller's taints go, the
        // user's stays.
        let mut back = done.clone();
        back.status = node("a", "True", 300).status;
        let probe = observe(Some(&probe), &back, None, t(300));
        let plan = reconcile_node(&back, &probe, GRACE, false, t(300));
        assert_eq!(plan.conditions, None);
        assert_eq!(
            plan.taints.unwrap(),
            vec![taint("dedicated", NO_SCHEDULE, None)]
        );
    }

    #[test]
    fn conditions_and_cordoning_bring_their_taints() {
        let mut n = node("a", "False", 100);
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[1].status = "True".into();
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let probe = observe(None, &n, None, t(100));
        let plan = reconcile_node(&n, &probe, GRACE, false, t(110));
        assert_eq!(plan.conditions, None);
        assert_eq!(
            plan.taints.unwrap(),
            vec![
                taint(NOT_READY, NO_SCHEDULE, Some(110)),
                taint("node.kubernetes.io/disk-pressure", NO_SCHEDULE, Some(110)),
                taint(UNSCHEDULABLE, NO_SCHEDULE, Some(110)),
                taint(NOT_READY, NO_EXECUTE, Some(110)),
            ]
        );
        // Unreachable becomes not-ready when the kubelet reports again, not ready.
        let mut swapped = n.clone();
        swapped.spec.as_mut().unwrap().taints = Some(vec![
            taint(UNREACHABLE, NO_SCHEDULE, Some(50)),
            taint(UNREACHABLE, NO_EXECUTE, Some(50)),
        ]);
        swapped.spec.as_mut().unwrap().unschedulable = None;
        swapped
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[1]
            .status = "False".into();
        let plan = reconcile_node(&swapped, &probe, GRACE, false, t(110));
        assert_eq!(
            plan.taints.unwrap(),
            vec![
                taint(NOT_READY, NO_SCHEDULE, Some(110)),
                taint(NOT_READY, NO_EXECUTE, Some(110)),
            ]
        );
    }

    #[test]
    fn a_node_that_never_posts_its_status_goes_unknown_after_startup_grace() {
        let mut n = node("a", "True", 0);
        n.status = None;
        let probe = observe(None, &n, None, t(10));
        assert_eq!(
            reconcile_node(&n, &probe, GRACE, false, t(59)).conditions,
            None
        );
        // No Ready condition yet: no taint for it either.
        assert_eq!(reconcile_node(&n, &probe, GRACE, false, t(59)).taints, None);
        let plan = reconcile_node(&n, &probe, GRACE, false, t(61));
        let conds = plan.conditions.unwrap();
        assert_eq!(conds.len(), 4);
        assert_eq!(conds[0].type_, "Ready");
        assert_eq!(conds[0].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(
            conds[0].message.as_deref(),
            Some("Kubelet never posted node status.")
        );
        assert_eq!(conds[0].last_heartbeat_time, Some(Time(t(0))));
    }

    #[test]
    fn tolerations_decide_when_a_pod_goes() {
        let unreachable = vec![(taint(UNREACHABLE, NO_EXECUTE, Some(100)), t(100))];
        // Not tolerated: now.
        assert_eq!(verdict(&[], &unreachable, t(100)), Verdict::EvictNow);
        let other = toleration(NOT_READY, None);
        assert_eq!(verdict(&[other], &unreachable, t(100)), Verdict::EvictNow);
        // Tolerated for ever.
        let forever = toleration(UNREACHABLE, None);
        assert_eq!(
            verdict(std::slice::from_ref(&forever), &unreachable, t(100)),
            Verdict::Stay
        );
        // Tolerated for 2 s from when the taint was added.
        let two = toleration(UNREACHABLE, Some(2));
        assert_eq!(
            verdict(std::slice::from_ref(&two), &unreachable, t(101)),
            Verdict::EvictAt(t(102))
        );
        assert_eq!(
            verdict(std::slice::from_ref(&two), &unreachable, t(102)),
            Verdict::EvictNow
        );
        // Zero seconds: not at all.
        assert_eq!(
            verdict(&[toleration(UNREACHABLE, Some(0))], &unreachable, t(100)),
            Verdict::EvictNow
        );
        // The first matching toleration counts (upstream's pick).
        assert_eq!(
            verdict(&[forever, two.clone()], &unreachable, t(100)),
            Verdict::Stay
        );
        // Tolerating everything.
        let all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(verdict(&[all], &unreachable, t(100)), Verdict::Stay);
        // No taints: stay.
        assert_eq!(verdict(&[], &[], t(100)), Verdict::Stay);
        // Several taints: the earliest deadline.
        let both = vec![
            (taint(UNREACHABLE, NO_EXECUTE, Some(100)), t(100)),
            (taint(NOT_READY, NO_EXECUTE, Some(90)), t(90)),
        ];
        let tols = [two, toleration(NOT_READY, Some(5))];
        assert_eq!(verdict(&tols, &both, t(91)), Verdict::EvictAt(t(95)));
        // A value must match for Equal.
        let dedicated = Taint {
            value: Some("gpu".into()),
            ..taint("dedicated", NO_EXECUTE, None)
        };
        let equal = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("cpu".into()),
            ..Default::default()
        };
        assert!(!tolerates(&equal, &dedicated));
    }

    #[test]
    fn pods_on_a_node_are_marked_and_evicted() {
        let taints = vec![(taint(UNREACHABLE, NO_EXECUTE, Some(100)), t(100))];
        let mut gone = (*pod("terminating", "b", vec![], true)).clone();
        gone.metadata.deletion_timestamp = Some(Time(t(90)));
        let pods = vec![
            pod("intolerant", "b", vec![], true),
            pod(
                "patient",
                "b",
                vec![toleration(UNREACHABLE, Some(300))],
                false,
            ),
            pod("forever", "b", vec![toleration(UNREACHABLE, None)], true),
            Arc::new(gone),
        ];
        let plan = reconcile_pods(&pods, &taints, true, t(101));
        let names = |v: &[&Pod]| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(&plan.evict), ["intolerant"]);
        assert_eq!(
            names(&plan.mark_not_ready),
            ["intolerant", "forever", "terminating"]
        );
        assert_eq!(
            plan.pending,
            BTreeMap::from([(
                Key {
                    namespace: "default".into(),
                    name: "patient".into()
                },
                t(400)
            )])
        );
        // Not marking: only evictions.
        assert!(reconcile_pods(&pods, &taints, false, t(101))
            .mark_not_ready
            .is_empty());
    }

    #[test]
    fn pod_conditions_change_as_upstream_sets_them() {
        let p = pod("p", "b", vec![], true);
        let mut ready = pod_condition(&p, "Ready").unwrap().clone();
        ready.status = "False".into();
        let updated = with_pod_condition(&p, ready.clone(), t(50)).unwrap();
        let c = pod_condition(&updated, "Ready").unwrap();
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("False", Some(Time(t(50))))
        );
        // Setting the same again changes nothing.
        assert!(with_pod_condition(&updated, ready, t(60)).is_none());
    }

    #[test]
    fn garbage_collection_finds_orphans_after_quarantine_and_old_finished_pods() {
        let mut nodes = HashMap::new();
        let mut oos = node("oos", "Unknown", 0);
        oos.spec.as_mut().unwrap().taints = Some(vec![taint(OUT_OF_SERVICE, NO_EXECUTE, None)]);
        nodes.insert("oos".to_string(), Arc::new(oos));
        nodes.insert("a".to_string(), Arc::new(node("a", "True", 0)));
        let finished = |name: &str, created: i64, evicted: bool| {
            let mut p = (*pod(name, "a", vec![], false)).clone();
            p.metadata.creation_timestamp = Some(Time(t(created)));
            let s = p.status.as_mut().unwrap();
            s.phase = Some("Failed".into());
            if evicted {
                s.reason = Some("Evicted".into());
            }
            Arc::new(p)
        };
        let terminating = |name: &str, node: &str| {
            let mut p = (*pod(name, node, vec![], false)).clone();
            p.metadata.deletion_timestamp = Some(Time(t(0)));
            Arc::new(p)
        };
        let pods = vec![
            finished("new", 30, false),
            finished("old", 10, false),
            finished("evicted", 20, true),
            pod("orphan", "gone", vec![], true),
            terminating("stuck", "oos"),
            terminating("fine", "a"),
            terminating("unscheduled", ""),
        ];
        let mut quarantine = HashMap::new();
        let names = |v: &[&Pod]| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        let plan = plan_gc(&pods, &nodes, &mut quarantine, 1, t(100));
        assert_eq!(names(&plan.terminated), ["evicted", "old"]);
        assert_eq!(names(&plan.out_of_service), ["stuck"]);
        assert_eq!(names(&plan.unscheduled_terminating), ["unscheduled"]);
        // The missing node is quarantined first...
        assert!(plan.missing_nodes.is_empty());
        assert_eq!(quarantine.get("gone"), Some(&t(100)));
        let plan = plan_gc(&pods, &nodes, &mut quarantine, 10, t(139));
        assert!(plan.missing_nodes.is_empty() && plan.terminated.is_empty());
        // ...and due once it has passed.
        let plan = plan_gc(&pods, &nodes, &mut quarantine, 10, t(140));
        assert_eq!(plan.missing_nodes, ["gone"]);
        // Once nothing refers to it, it is forgotten.
        plan_gc(&pods[..3], &nodes, &mut quarantine, 10, t(150));
        assert!(quarantine.is_empty());
    }

    async fn feed<K>(cache: &Cache<K>, objs: Vec<K>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let mut events = vec![Ok(watcher::Event::Init)];
        events.extend(objs.into_iter().map(|o| Ok(watcher::Event::InitApply(o))));
        events.push(Ok(watcher::Event::InitDone));
        cache.feed(stream::iter(events)).await;
    }

    fn controller(
        fx: Arc<Recording>,
        clock: Arc<FixedClock>,
    ) -> (Arc<NodeLifecycleController>, Arc<Caches>, Arc<Queue<Work>>) {
        let caches = Arc::new(Caches::new());
        let queue = Queue::new();
        let rec = |c| Arc::new(Recorder::new(fx.clone(), clock.clone(), c));
        let c = NodeLifecycleController::new(
            caches.clone(),
            fx.clone(),
            clock.clone(),
            rec("node-controller"),
            rec("taint-eviction-controller"),
            queue.clone(),
            GRACE,
        );
        NodeLifecycleController::watch(&caches, &queue);
        (c, caches, queue)
    }

    #[tokio::test(start_paused = true)]
    async fn driver_marks_a_silent_node_unknown_and_taints_it() {
        let fx = Arc::new(Recording::default());
        let clock = Arc::new(FixedClock(Mutex::new(t(100))));
        let (c, caches, _queue) = controller(fx.clone(), clock.clone());
        feed(
            &caches.nodes,
            vec![node("a-0", "True", 100), node("b-0", "True", 100)],
        )
        .await;
        feed(&caches.leases, vec![lease("a-0", 100), lease("b-0", 100)]).await;
        feed(&caches.pods, vec![]).await;

        // First look: both seen alive now; registered.
        assert_eq!(c.monitor().await.unwrap(), Next::After(MONITOR_PERIOD));
        assert_eq!(c.sync_node("b-0").await.unwrap(), Next::Done);
        let calls = fx.calls();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        assert!(
            calls[0].starts_with("create Event default/b-0."),
            "{calls:#?}"
        );

        // 41 s later b-0 has been silent (a-0 was heard from just now): Unknown,
        // tainted, NodeNotReady.
        c.state().health.get_mut("a-0").unwrap().at = t(140);
        *clock.0.lock().unwrap() = t(141);
        c.monitor().await.unwrap();
        c.sync_node("b-0").await.unwrap();
        let calls = fx.calls();
        let status = calls
            .iter()
            .find(|c| c.starts_with("status Node /b-0"))
            .unwrap();
        assert!(status.contains("NodeStatusUnknown"), "{status}");
        let patch = calls
            .iter()
            .find(|c| c.starts_with("patch Node /b-0"))
            .unwrap();
        assert!(
            patch.contains(UNREACHABLE) && patch.contains(NO_EXECUTE),
            "{patch}"
        );
        assert!(patch.contains(r#""resourceVersion":"7""#), "{patch}");
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("create Event"))
                .count(),
            2,
            "{calls:#?}"
        );
        assert!(!calls.iter().any(|c| c.contains("a-0")), "{calls:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn driver_evicts_pods_when_their_toleration_runs_out() {
        let fx = Arc::new(Recording::default());
        let clock = Arc::new(FixedClock(Mutex::new(t(141))));
        let (c, caches, _queue) = controller(fx.clone(), clock.clone());
        let mut tainted = node("b-0", "Unknown", 100);
        tainted.spec.as_mut().unwrap().taints = Some(vec![
            taint(UNREACHABLE, NO_SCHEDULE, Some(141)),
            taint(UNREACHABLE, NO_EXECUTE, Some(141)),
        ]);
        feed(&caches.nodes, vec![tainted, node("a-0", "True", 140)]).await;
        feed(&caches.leases, vec![]).await;
        let pods = vec![
            (*pod("web-1", "b-0", vec![toleration(UNREACHABLE, Some(2))], true)).clone(),
            (*pod("web-2", "a-0", vec![], true)).clone(),
        ];
        feed(&caches.pods, pods).await;

        // The pod is marked not ready; its deletion is due 2 s after the taint came.
        let next = c.sync_pods("b-0").await.unwrap();
        assert_eq!(next, Next::After(Duration::from_secs(2)));
        let calls = fx.calls();
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("status Pod default/web-1") && c.contains(r#""False""#)),
            "{calls:#?}"
        );
        assert!(!calls.iter().any(|c| c.starts_with("delete")), "{calls:#?}");

        // Due: deleted, with the condition and the event.
        *clock.0.lock().unwrap() = t(143);
        assert_eq!(c.sync_pods("b-0").await.unwrap(), Next::Done);
        let calls = fx.calls();
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("status Pod default/web-1")
                    && c.contains("DeletionByTaintManager")),
            "{calls:#?}"
        );
        assert!(
            calls.contains(&"delete Pod default/web-1 None".to_string()),
            "{calls:#?}"
        );
        assert!(
            calls
                .iter()
                .filter(|c| c.starts_with("create Event default/web-1."))
                .count()
                >= 2,
            "{calls:#?}"
        );
        // The pod on the healthy node is untouched.
        assert!(!calls.iter().any(|c| c.contains("web-2")), "{calls:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn driver_holds_back_no_execute_when_every_node_is_down() {
        let fx = Arc::new(Recording::default());
        let clock = Arc::new(FixedClock(Mutex::new(t(100))));
        let (c, caches, _queue) = controller(fx.clone(), clock.clone());
        feed(&caches.nodes, vec![node("only", "True", 100)]).await;
        feed(&caches.leases, vec![]).await;
        feed(&caches.pods, vec![]).await;
        c.monitor().await.unwrap();
        // The only node goes silent: the same pass that finds it silent holds the
        // NoExecute taint back, before the node is marked.
        *clock.0.lock().unwrap() = t(141);
        c.monitor().await.unwrap();
        c.sync_node("only").await.unwrap();
        let calls = fx.calls();
        assert!(
            calls.iter().any(|c| c.starts_with("status Node /only")),
            "{calls:#?}"
        );
        let patch = calls
            .iter()
            .find(|c| c.starts_with("patch Node /only"))
            .unwrap();
        assert!(patch.contains(UNREACHABLE), "{patch}");
        assert!(!patch.contains(NO_EXECUTE), "{patch}");
    }
}
