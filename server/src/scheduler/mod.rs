//! The scheduler: places unbound pods on nodes through `pods/binding`.
//!
//! It runs inside `skiff server` as a client of the API over loopback, with its own
//! identity (`system:kube-scheduler`), and behaves as upstream's default profile does for
//! a kubectl user. Start reading at [`run`], then:
//!
//! - `cache.rs`: nodes and the pods on them, requests summed incrementally, with the pods
//!   this scheduler has just placed counted ("assumed") before the watch confirms them;
//! - `queue.rs`: pods to try (priority, then FIFO), back-off, and the unschedulable pods
//!   parked until the cluster changes;
//! - `schedule.rs`: one decision — filter (`filter.rs`), score (`score.rs`), pick;
//! - `preempt.rs`: when nothing fits, which pods of lower priority to delete and where
//!   (the pod is nominated to that node, which keeps the room for it);
//! - `priority.rs`: pod priority from PriorityClasses when admission did not set it;
//! - `resources.rs`: quantities and pod requests.
//!
//! Not done: preferred inter-pod affinity, volume-related filters. Nominated pods reserve
//! their requests on the node (not their ports or inter-pod terms).

mod cache;
mod filter;
mod preempt;
mod priority;
mod queue;
mod resources;
mod schedule;
mod score;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{
    Binding, Event as CoreEvent, EventSource, Node, ObjectReference, Pod, PodCondition,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use cache::{Cache, PodFacts, DISRUPTION_TARGET, PREEMPTION_BY_SCHEDULER};
use preempt::{Budget, Outcome};
use priority::Classes;
use queue::Queue;
use schedule::Cursor;

/// The name pods use to ask for this scheduler; also the events' source.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Bindings in flight at once. A binding waits for its commit, tens of milliseconds on a
/// loaded server, so this bounds the rate: 16 would cap it near 500 pods/s.
const MAX_IN_FLIGHT: usize = 128;
/// Decisions made before looking at the watches again.
const BATCH: usize = 64;
/// Event and status writes waiting; beyond this they are dropped (events are best effort,
/// and a dropped condition is written again at the next attempt).
const WRITE_BACKLOG: usize = 16_384;
/// Event and status writes in flight at once.
const WRITERS: usize = 8;

/// How the scheduler scores nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Prefer the node with the most room left (spreads load).
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that fits (packs small fleets).
    BinPack,
}

/// Scheduler settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The scoring strategy.
    pub strategy: Strategy,
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API could not be reached or refused a request the scheduler cannot do without.
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
    /// A watch stream ended (they retry on their own, so this is not expected).
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// Runs the scheduler until `cancel` fires.
pub async fn run(
    client: kube::Client,
    config: Config,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff();
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff();
    let classes = watcher::watcher(
        Api::<PriorityClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let budgets = watcher::watcher(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let inputs = Inputs {
        nodes,
        pods,
        classes,
        budgets,
    };
    drive(client, config, inputs, cancel).await
}

/// The watches the scheduler runs on.
struct Inputs<N, P, C, B> {
    nodes: N,
    pods: P,
    classes: C,
    budgets: B,
}

/// Whether this scheduler should place `pod`.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().unwrap_or("").is_empty()
        && matches!(
            spec.scheduler_name.as_deref(),
            None | Some("") | Some(SCHEDULER_NAME)
        )
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// What happened to a binding.
#[derive(Debug)]
enum Bound {
    /// 201.
    Done,
    /// 409/404: someone else bound it, or it is being deleted, or it is gone.
    Gone,
    /// Anything else: try again later.
    Failed(kube::Error),
}

#[derive(Debug)]
struct BindResult {
    key: String,
    pod: Arc<Pod>,
    node: String,
    result: Bound,
}

/// A write that may wait and may be dropped.
#[derive(Debug)]
enum Write {
    Event(Box<CoreEvent>),
    Condition {
        namespace: String,
        name: String,
        patch: serde_json::Value,
    },
}

/// What to do about a pod's `status.nominatedNodeName`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Nominate {
    /// Leave it.
    Keep,
    /// Set it (the pod preempted there).
    Set(String),
    /// Clear it (no node would do even with preemption).
    Clear,
}

/// A pod that fits nowhere: what to write on it.
#[derive(Debug)]
struct Failure {
    pod: Arc<Pod>,
    message: String,
    nominate: Nominate,
}

/// A preemption to carry out.
#[derive(Debug)]
struct Preemption {
    preemptor: Arc<Pod>,
    node: String,
    victims: Vec<Arc<PodFacts>>,
    /// Pods of lower priority nominated to the same node: (namespace, name) whose
    /// nomination to clear, as they may no longer fit there.
    unnominate: Vec<(String, String)>,
}

/// What one round of decisions produced.
#[derive(Debug, Default)]
struct Decisions {
    /// Bindings to start: key, pod, node.
    binds: Vec<(String, Arc<Pod>, String)>,
    failures: Vec<Failure>,
    preemptions: Vec<Preemption>,
}

/// Everything the loop owns.
struct Scheduler {
    strategy: Strategy,
    cache: Cache,
    queue: Queue,
    cursor: Cursor,
    classes: Classes,
    budgets: HashMap<String, Budget>,
    in_flight: usize,
    nodes_synced: bool,
    pods_synced: bool,
    /// The PriorityClasses were listed (or their watch failed: pods go on without them).
    classes_ready: bool,
    node_relist: Option<HashSet<String>>,
    pod_relist: Option<HashSet<String>>,
    class_relist: Option<HashSet<String>>,
    budget_relist: Option<HashSet<String>>,
    bound: u64,
}

impl Scheduler {
    fn new(strategy: Strategy, seed: u64) -> Scheduler {
        Scheduler {
            strategy,
            cache: Cache::default(),
            queue: Queue::default(),
            cursor: Cursor::new(seed),
            classes: Classes::default(),
            budgets: HashMap::new(),
            in_flight: 0,
            nodes_synced: false,
            pods_synced: false,
            classes_ready: false,
            node_relist: None,
            pod_relist: None,
            class_relist: None,
            budget_relist: None,
            bound: 0,
        }
    }

    fn on_class(&mut self, ev: Event<PriorityClass>) {
        let name = |pc: &PriorityClass| pc.metadata.name.clone().unwrap_or_default();
        match ev {
            Event::Apply(pc) => self.classes.apply(&pc),
            Event::Delete(pc) => self.classes.delete(&name(&pc)),
            Event::Init => self.class_relist = Some(HashSet::new()),
            Event::InitApply(pc) => {
                if let Some(seen) = self.class_relist.as_mut() {
                    seen.insert(name(&pc));
                }
                self.classes.apply(&pc);
            }
            Event::InitDone => {
                if let Some(seen) = self.class_relist.take() {
                    self.classes.retain(&seen);
                }
                self.classes_ready = true;
            }
        }
    }

    fn on_budget(&mut self, ev: Event<PodDisruptionBudget>) {
        let key = |b: &PodDisruptionBudget| {
            format!(
                "{}/{}",
                b.metadata.namespace.as_deref().unwrap_or(""),
                b.metadata.name.as_deref().unwrap_or("")
            )
        };
        match ev {
            Event::Apply(b) => {
                self.budgets.insert(key(&b), Budget::from_pdb(&b));
            }
            Event::Delete(b) => {
                self.budgets.remove(&key(&b));
            }
            Event::Init => self.budget_relist = Some(HashSet::new()),
            Event::InitApply(b) => {
                if let Some(seen) = self.budget_relist.as_mut() {
                    seen.insert(key(&b));
                }
                self.budgets.insert(key(&b), Budget::from_pdb(&b));
            }
            Event::InitDone => {
                if let Some(seen) = self.budget_relist.take() {
                    self.budgets.retain(|k, _| seen.contains(k));
                }
            }
        }
    }

    fn on_node(&mut self, ev: Event<Node>) {
        match ev {
            Event::Apply(n) => self.apply_node(&n),
            Event::Delete(n) => {
                self.cache
                    .delete_node(n.metadata.name.as_deref().unwrap_or(""));
            }
            Event::Init => self.node_relist = Some(HashSet::new()),
            Event::InitApply(n) => {
                if let Some(seen) = self.node_relist.as_mut() {
                    seen.insert(n.metadata.name.clone().unwrap_or_default());
                }
                self.apply_node(&n);
            }
            Event::InitDone => {
                if let Some(seen) = self.node_relist.take() {
                    self.cache.retain_nodes(&seen);
                }
                self.nodes_synced = true;
            }
        }
    }

    fn apply_node(&mut self, n: &Node) {
        if self.cache.apply_node(n) {
            self.queue.cluster_changed();
        }
    }

    fn on_pod(&mut self, ev: Event<Pod>, now: Instant) {
        match ev {
            Event::Apply(p) => self.apply_pod(p, now),
            Event::Delete(p) => {
                let key = key_of(&p);
                if self.cache.remove_pod(&key) {
                    self.queue.cluster_changed();
                }
                self.queue.remove(&key);
            }
            Event::Init => self.pod_relist = Some(HashSet::new()),
            Event::InitApply(p) => {
                if let Some(seen) = self.pod_relist.as_mut() {
                    seen.insert(key_of(&p));
                }
                self.apply_pod(p, now);
            }
            Event::InitDone => {
                if let Some(seen) = self.pod_relist.take() {
                    self.cache.retain_pods(&seen);
                    self.queue.retain(&seen);
                    self.queue.cluster_changed();
                }
                self.pods_synced = true;
            }
        }
    }

    fn apply_pod(&mut self, mut p: Pod, now: Instant) {
        self.classes.resolve(&mut p);
        let key = key_of(&p);
        if self.cache.apply_pod(&p) {
            self.queue.cluster_changed();
        }
        if !wants_scheduling(&p) {
            self.queue.remove(&key);
        } else if !self.cache.is_placed(&key) {
            self.queue.upsert(&key, Arc::new(p), now);
        }
    }

    /// Decides for up to [`BATCH`] pods: bindings to start, failures to record,
    /// preemptions to carry out.
    fn decide(&mut self, now: Instant) -> Decisions {
        let mut out = Decisions::default();
        for _ in 0..BATCH {
            if self.in_flight >= MAX_IN_FLIGHT {
                break;
            }
            let Some((key, pod)) = self.queue.pop() else {
                break;
            };
            let facts = PodFacts::from_pod(&pod);
            match schedule::schedule(&self.cache, &pod, &facts, self.strategy, &mut self.cursor) {
                Ok(node) => {
                    self.cache.assume(Arc::new(facts), &node);
                    self.in_flight += 1;
                    out.binds.push((key, pod, node));
                }
                Err(u) => {
                    self.queue.unschedulable(&key, now);
                    let failure = if u.failures.is_empty() {
                        Failure {
                            pod,
                            message: u.message,
                            nominate: Nominate::Keep,
                        }
                    } else {
                        self.preempt(pod, facts, u, &mut out.preemptions)
                    };
                    tracing::debug!(pod = %key, reason = %failure.message, "unschedulable");
                    out.failures.push(failure);
                }
            }
        }
        out
    }

    /// Runs preemption for a pod that fits nowhere; records the nomination and the
    /// victims in the cache at once, so the next decisions see them.
    fn preempt(
        &mut self,
        pod: Arc<Pod>,
        facts: PodFacts,
        u: schedule::Unschedulable,
        preemptions: &mut Vec<Preemption>,
    ) -> Failure {
        let budgets: Vec<&Budget> = self.budgets.values().collect();
        let outcome = preempt::preempt(&self.cache, &pod, &facts, &u, &budgets, &mut self.cursor);
        match outcome {
            Outcome::NotPossible {
                message,
                clear_nomination,
            } => {
                let nominate = if clear_nomination {
                    self.cache.unnominate(&facts.key);
                    Nominate::Clear
                } else {
                    Nominate::Keep
                };
                Failure {
                    pod,
                    message: format!("{} {message}", u.message),
                    nominate,
                }
            }
            Outcome::Preempt(c) => {
                tracing::info!(
                    pod = %facts.key,
                    node = %c.node,
                    victims = c.victims.pods.len(),
                    "preempting"
                );
                let unnominate: Vec<(String, String)> = self
                    .cache
                    .nominated_on(&c.node)
                    .filter(|p| p.priority < facts.priority)
                    .map(|p| (p.namespace.clone(), p.name.clone()))
                    .collect();
                for (ns, name) in &unnominate {
                    self.cache.unnominate(&format!("{ns}/{name}"));
                }
                for v in &c.victims.pods {
                    self.cache.mark_preempted(&v.key);
                }
                self.cache.nominate(Arc::new(facts), &c.node);
                preemptions.push(Preemption {
                    preemptor: pod.clone(),
                    node: c.node.clone(),
                    victims: c.victims.pods,
                    unnominate,
                });
                Failure {
                    pod,
                    message: u.message,
                    nominate: Nominate::Set(c.node),
                }
            }
        }
    }

    fn on_bound(&mut self, r: BindResult, now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        match r.result {
            Bound::Done => {
                self.bound += 1;
                self.queue.done(&r.key);
                true
            }
            Bound::Gone => {
                tracing::debug!(pod = %r.key, "binding refused: bound elsewhere or gone");
                self.cache.forget(&r.key);
                self.queue.done(&r.key);
                self.queue.cluster_changed();
                false
            }
            Bound::Failed(e) => {
                tracing::warn!(pod = %r.key, node = %r.node, error = %e, "binding failed; will retry");
                self.cache.forget(&r.key);
                self.queue.retry_later(&r.key, now);
                false
            }
        }
    }
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// A reference to a pod, as events carry it.
fn pod_ref(
    namespace: &str,
    name: &str,
    uid: &str,
    resource_version: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        uid: Some(uid.to_owned()),
        resource_version,
        ..Default::default()
    }
}

fn ref_of(pod: &Pod) -> ObjectReference {
    pod_ref(
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or(""),
        pod.metadata.resource_version.clone(),
    )
}

/// A core/v1 Event about a pod, as upstream's scheduler records it.
fn event(
    regarding: ObjectReference,
    related: Option<ObjectReference>,
    type_: &str,
    reason: &str,
    action: &str,
    message: String,
) -> CoreEvent {
    let now = now_time();
    let name = regarding.name.clone().unwrap_or_default();
    let nanos = now.0.as_nanosecond();
    CoreEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{nanos:x}")),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        involved_object: regarding,
        related,
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        reporting_component: Some(SCHEDULER_NAME.into()),
        reporting_instance: Some(format!("{SCHEDULER_NAME}-skiff")),
        action: Some(action.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

/// A core/v1 Event about `pod` from scheduling it.
fn pod_event(pod: &Pod, type_: &str, reason: &str, message: String) -> CoreEvent {
    let action = if reason == "Scheduled" {
        "Binding"
    } else {
        "Scheduling"
    };
    event(ref_of(pod), None, type_, reason, action, message)
}

/// The merge patch that sets `PodScheduled=False/Unschedulable` with `message` and the
/// nomination, or `None` when the pod already says exactly that. A merge patch replaces
/// the whole list, so the other conditions are carried over.
fn unschedulable_patch(pod: &Pod, message: &str, nominate: &Nominate) -> Option<serde_json::Value> {
    let status = pod.status.as_ref();
    let conditions = status
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let current = conditions.iter().find(|c| c.type_ == "PodScheduled");
    let same = current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    });
    let nominated = status
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    let nomination = match nominate {
        Nominate::Set(node) if nominated != Some(node.as_str()) => Some(serde_json::json!(node)),
        Nominate::Clear if nominated.is_some() => Some(serde_json::Value::Null),
        _ => None,
    };
    if same && nomination.is_none() {
        return None;
    }
    let mut patch = serde_json::json!({ "status": {} });
    if !same {
        let since = current
            .filter(|c| c.status == "False")
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(now_time);
        let mut out: Vec<PodCondition> = conditions
            .iter()
            .filter(|c| c.type_ != "PodScheduled")
            .cloned()
            .collect();
        out.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message.to_owned()),
            last_transition_time: Some(since),
            ..Default::default()
        });
        patch["status"]["conditions"] = serde_json::json!(out);
    }
    if let Some(n) = nomination {
        patch["status"]["nominatedNodeName"] = n;
    }
    Some(patch)
}

/// Whether an API error means the pod is already gone (or replaced).
fn gone_already(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

/// Preempts one victim as upstream does: the `DisruptionTarget` condition, a graceful
/// delete (of that very pod: uid precondition), and a `Preempted` event on it.
async fn preempt_victim(
    client: kube::Client,
    victim: Arc<PodFacts>,
    preemptor: ObjectReference,
    node: String,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &victim.namespace);
    let condition = serde_json::json!({ "status": { "conditions": [{
        "type": DISRUPTION_TARGET,
        "status": "True",
        "reason": PREEMPTION_BY_SCHEDULER,
        "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
        "lastTransitionTime": now_time(),
    }]}});
    let patched = api
        .patch_status(
            &victim.name,
            &PatchParams::default(),
            &Patch::Strategic(&condition),
        )
        .await;
    match patched {
        Ok(_) => {}
        Err(e) if gone_already(&e) => return,
        Err(e) => {
            tracing::warn!(victim = %victim.key, error = %e, "could not mark the victim of a preemption");
            return;
        }
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(victim.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&victim.name, &params).await {
        Ok(_) => {}
        Err(e) if gone_already(&e) => return,
        Err(e) => {
            tracing::warn!(victim = %victim.key, error = %e, "could not delete the victim of a preemption");
            return;
        }
    }
    let uid = preemptor.uid.clone().unwrap_or_default();
    let ev = event(
        pod_ref(&victim.namespace, &victim.name, &victim.uid, None),
        Some(preemptor),
        "Normal",
        "Preempted",
        "Preempting",
        format!("Preempted by pod {uid} on node {node}"),
    );
    if let Err(e) = Api::<CoreEvent>::namespaced(client, &victim.namespace)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::debug!(error = %e, "could not record a Preempted event");
    }
}

/// Carries out a preemption: the victims in parallel (those already terminating are left
/// to finish), then the nominations of lower-priority pods on the node are cleared.
async fn carry_out(client: kube::Client, p: Preemption) {
    let preemptor = ref_of(&p.preemptor);
    let victims = p
        .victims
        .into_iter()
        .filter(|v| !v.terminating)
        .map(|v| preempt_victim(client.clone(), v, preemptor.clone(), p.node.clone()));
    futures::future::join_all(victims).await;
    let clear = serde_json::json!({ "status": { "nominatedNodeName": null } });
    for (namespace, name) in p.unnominate {
        let result = Api::<Pod>::namespaced(client.clone(), &namespace)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&clear))
            .await;
        if let Err(e) = result {
            tracing::debug!(pod = %format!("{namespace}/{name}"), error = %e, "could not clear a nomination");
        }
    }
}

async fn bind(client: kube::Client, key: String, pod: Arc<Pod>, node: String) -> BindResult {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let result = match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Bound::Done,
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Bound::Gone,
        Err(e) => Bound::Failed(e),
    };
    BindResult {
        key,
        pod,
        node,
        result,
    }
}

async fn write(client: kube::Client, w: Write) {
    let result = match w {
        Write::Event(ev) => {
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            Api::<CoreEvent>::namespaced(client, &ns)
                .create(&PostParams::default(), &ev)
                .await
                .map(drop)
        }
        Write::Condition {
            namespace,
            name,
            patch,
        } => Api::<Pod>::namespaced(client, &namespace)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "scheduler write failed");
    }
}

/// The loop: watch events update the cache and the queue; queued pods are decided and
/// bound with bounded concurrency; failures are recorded by a pool of writers.
async fn drive<N, P, C, B>(
    client: kube::Client,
    config: Config,
    inputs: Inputs<N, P, C, B>,
    cancel: CancellationToken,
) -> Result<(), Error>
where
    N: Stream<Item = watcher::Result<Event<Node>>> + Send,
    P: Stream<Item = watcher::Result<Event<Pod>>> + Send,
    C: Stream<Item = watcher::Result<Event<PriorityClass>>> + Send,
    B: Stream<Item = watcher::Result<Event<PodDisruptionBudget>>> + Send,
{
    let mut nodes = std::pin::pin!(inputs.nodes);
    let mut pods = std::pin::pin!(inputs.pods);
    let mut classes = std::pin::pin!(inputs.classes);
    let mut budgets = std::pin::pin!(inputs.budgets);
    let seed = rand::random::<u64>();
    let mut s = Scheduler::new(config.strategy, seed);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<BindResult>();
    let (mut writes, write_rx) = futures::channel::mpsc::channel::<Write>(WRITE_BACKLOG);
    let writer_client = client.clone();
    let writers = tokio::spawn(
        write_rx.for_each_concurrent(WRITERS, move |w| write(writer_client.clone(), w)),
    );
    let mut queue_write = |w: Write| {
        if writes.try_send(w).is_err() {
            tracing::debug!("scheduler write backlog full; dropping a write");
        }
    };
    let result = loop {
        let now = Instant::now();
        let synced = s.nodes_synced && s.pods_synced;
        if synced {
            s.queue.promote(now);
        }
        let ready = synced && s.queue.has_active() && s.in_flight < MAX_IN_FLIGHT;
        // Pods are read once the classes are known, so their priorities resolve.
        let pods_open = s.classes_ready;
        let wake = s
            .queue
            .next_wakeup()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            Some(r) = done_rx.recv() => {
                let (pod, node) = (r.pod.clone(), r.node.clone());
                if s.on_bound(r, Instant::now()) {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                    let name = pod.metadata.name.as_deref().unwrap_or("");
                    let msg = format!("Successfully assigned {ns}/{name} to {node}");
                    queue_write(Write::Event(Box::new(pod_event(&pod, "Normal", "Scheduled", msg))));
                }
            }
            ev = classes.next() => match ev {
                Some(Ok(ev)) => s.on_class(ev),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "priority class watch failed; retrying");
                    s.classes_ready = true;
                }
                None => break Err(Error::WatchEnded("priority class")),
            },
            ev = budgets.next() => match ev {
                Some(Ok(ev)) => s.on_budget(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "pod disruption budget watch failed; retrying"),
                None => break Err(Error::WatchEnded("pod disruption budget")),
            },
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => s.on_node(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                None => break Err(Error::WatchEnded("node")),
            },
            ev = pods.next(), if pods_open => match ev {
                Some(Ok(ev)) => s.on_pod(ev, Instant::now()),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => break Err(Error::WatchEnded("pod")),
            },
            _ = std::future::ready(()), if ready => {
                let decisions = s.decide(Instant::now());
                for (key, pod, node) in decisions.binds {
                    let (client, tx) = (client.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(bind(client, key, pod, node).await);
                    });
                }
                for p in decisions.preemptions {
                    tokio::spawn(carry_out(client.clone(), p));
                }
                for f in decisions.failures {
                    let pod = &f.pod;
                    if let Some(patch) = unschedulable_patch(pod, &f.message, &f.nominate) {
                        queue_write(Write::Condition {
                            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                            name: pod.metadata.name.clone().unwrap_or_default(),
                            patch,
                        });
                    }
                    queue_write(Write::Event(Box::new(pod_event(pod, "Warning", "FailedScheduling", f.message))));
                }
            }
            _ = tokio::time::sleep_until(wake), if !ready => {}
        }
    };
    writers.abort();
    tracing::info!(bound = s.bound, "scheduler stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache::tests::{bound, pod};
    use k8s_openapi::api::core::v1::{PodSchedulingGate, PodStatus};

    #[test]
    fn which_pods_to_schedule() {
        assert!(wants_scheduling(&pod("p", "", "")));
        assert!(!wants_scheduling(&bound(pod("p", "", ""), "a")));
        let mut other = pod("p", "", "");
        other.spec.as_mut().unwrap().scheduler_name = Some("other".into());
        assert!(!wants_scheduling(&other));
        let mut ours = pod("p", "", "");
        ours.spec.as_mut().unwrap().scheduler_name = Some(SCHEDULER_NAME.into());
        assert!(wants_scheduling(&ours));
        let mut gated = pod("p", "", "");
        gated.spec.as_mut().unwrap().scheduling_gates =
            Some(vec![PodSchedulingGate { name: "g".into() }]);
        assert!(!wants_scheduling(&gated));
        let mut deleting = pod("p", "", "");
        deleting.metadata.deletion_timestamp = Some(now_time());
        assert!(!wants_scheduling(&deleting));
    }

    #[test]
    fn condition_patch_keeps_other_conditions_and_is_skipped_when_unchanged() {
        let mut p = pod("p", "", "");
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Custom".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let patch =
            unschedulable_patch(&p, "0/1 nodes are available: x.", &Nominate::Keep).unwrap();
        let conds = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[1]["type"], "PodScheduled");
        assert_eq!(conds[1]["status"], "False");
        assert_eq!(conds[1]["reason"], "Unschedulable");
        let applied: Vec<PodCondition> = serde_json::from_value(conds.clone().into()).unwrap();
        p.status.as_mut().unwrap().conditions = Some(applied);
        assert!(unschedulable_patch(&p, "0/1 nodes are available: x.", &Nominate::Keep).is_none());
        assert!(unschedulable_patch(&p, "0/2 nodes are available: y.", &Nominate::Keep).is_some());
    }

    #[test]
    fn nominations_are_written_with_the_condition() {
        let p = pod("p", "", "");
        let set = Nominate::Set("a".into());
        let patch = unschedulable_patch(&p, "m", &set).unwrap();
        assert_eq!(patch["status"]["nominatedNodeName"], "a");
        let conditions: Vec<PodCondition> =
            serde_json::from_value(patch["status"]["conditions"].clone()).unwrap();
        let mut q = p.clone();
        q.status = Some(PodStatus {
            nominated_node_name: Some("a".into()),
            conditions: Some(conditions),
            ..Default::default()
        });
        assert!(unschedulable_patch(&q, "m", &set).is_none());
        assert!(unschedulable_patch(&q, "m", &Nominate::Keep).is_none());
        let clear = unschedulable_patch(&q, "m", &Nominate::Clear).unwrap();
        assert!(clear["status"]["nominatedNodeName"].is_null());
        assert!(clear["status"].get("conditions").is_none());
        // Nothing to clear on a pod without a nomination.
        assert!(unschedulable_patch(&p, "m", &Nominate::Clear).is_some());
        let mut r = q.clone();
        r.status.as_mut().unwrap().nominated_node_name = None;
        assert!(unschedulable_patch(&r, "m", &Nominate::Clear).is_none());
    }

    #[test]
    fn a_pod_of_a_higher_class_preempts_then_binds_where_it_preempted() {
        use cache::tests::node;
        use k8s_openapi::api::scheduling::v1::PriorityClass;
        let t0 = Instant::now();
        let mut s = Scheduler::new(Strategy::LeastAllocated, 1);
        let class = |name: &str, value: i32| PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            value: Some(value),
            ..Default::default()
        };
        s.on_class(Event::Init);
        s.on_class(Event::InitApply(class("low", 10)));
        s.on_class(Event::InitApply(class("high", 1000)));
        s.on_class(Event::InitDone);
        s.on_node(Event::Init);
        s.on_node(Event::InitApply(node("a", "2", "4Gi")));
        s.on_node(Event::InitDone);
        let of_class = |mut p: Pod, class: &str| {
            p.spec.as_mut().unwrap().priority_class_name = Some(class.into());
            p
        };
        let low = bound(of_class(pod("low", "2", ""), "low"), "a");
        s.on_pod(Event::Init, t0);
        s.on_pod(Event::InitApply(low.clone()), t0);
        s.on_pod(Event::InitDone, t0);
        s.on_pod(Event::Apply(of_class(pod("high", "2", ""), "high")), t0);
        s.queue.promote(t0);
        let d = s.decide(t0);
        assert!(d.binds.is_empty());
        assert_eq!(d.preemptions.len(), 1);
        assert_eq!(d.preemptions[0].node, "a");
        assert_eq!(d.preemptions[0].victims[0].key, "default/low");
        assert_eq!(d.failures[0].nominate, Nominate::Set("a".into()));
        assert_eq!(
            d.failures[0].message,
            "0/1 nodes are available: 1 Insufficient cpu."
        );

        // Another pod of the low class finds the room taken, even once the victim is gone.
        s.on_pod(Event::Delete(low), t0);
        s.on_pod(Event::Apply(of_class(pod("low-2", "1", ""), "low")), t0);
        let t1 = t0 + std::time::Duration::from_secs(2);
        s.queue.promote(t1);
        let d = s.decide(t1);
        assert_eq!(d.binds.len(), 1);
        assert_eq!(
            (d.binds[0].0.as_str(), d.binds[0].2.as_str()),
            ("default/high", "a")
        );
        assert_eq!(d.failures.len(), 1);
        assert_eq!(
            d.failures[0].message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are \
             available: 1 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn events_look_like_upstreams() {
        let p = pod("web", "", "");
        let ev = pod_event(
            &p,
            "Normal",
            "Scheduled",
            "Successfully assigned default/web to a".into(),
        );
        assert!(ev.metadata.name.unwrap().starts_with("web."));
        assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(
            ev.source.unwrap().component.as_deref(),
            Some(SCHEDULER_NAME)
        );
        assert_eq!(ev.reporting_component.as_deref(), Some(SCHEDULER_NAME));
    }
}
