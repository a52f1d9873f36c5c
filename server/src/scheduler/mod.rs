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
//! - `resources.rs`: quantities and pod requests.
//!
//! Not done: preemption (a pod that fits nowhere waits; its message says no victims were
//! found), preferred inter-pod affinity, volume-related filters.

mod cache;
mod filter;
mod queue;
mod resources;
mod schedule;
mod score;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{
    Binding, Event as CoreEvent, EventSource, Node, ObjectReference, Pod, PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use cache::{Cache, PodFacts};
use queue::Queue;
use schedule::Cursor;

/// The name pods use to ask for this scheduler; also the events' source.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Bindings in flight at once.
const MAX_IN_FLIGHT: usize = 16;
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
    drive(client, config, nodes, pods, cancel).await
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

/// Bindings to start (key, pod, node) and failures to record (pod, message).
type Decisions = (Vec<(String, Arc<Pod>, String)>, Vec<(Arc<Pod>, String)>);

/// Everything the loop owns.
struct Scheduler {
    strategy: Strategy,
    cache: Cache,
    queue: Queue,
    cursor: Cursor,
    in_flight: usize,
    nodes_synced: bool,
    pods_synced: bool,
    node_relist: Option<HashSet<String>>,
    pod_relist: Option<HashSet<String>>,
    bound: u64,
}

impl Scheduler {
    fn new(strategy: Strategy, seed: u64) -> Scheduler {
        Scheduler {
            strategy,
            cache: Cache::default(),
            queue: Queue::default(),
            cursor: Cursor::new(seed),
            in_flight: 0,
            nodes_synced: false,
            pods_synced: false,
            node_relist: None,
            pod_relist: None,
            bound: 0,
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

    fn apply_pod(&mut self, p: Pod, now: Instant) {
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

    /// Decides for up to [`BATCH`] pods; returns the bindings to start and the failures to
    /// record.
    fn decide(&mut self, now: Instant) -> Decisions {
        let (mut binds, mut failures) = (Vec::new(), Vec::new());
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
                    binds.push((key, pod, node));
                }
                Err(u) => {
                    tracing::debug!(pod = %key, reason = %u.message, "unschedulable");
                    self.queue.unschedulable(&key, now);
                    failures.push((pod, u.message));
                }
            }
        }
        (binds, failures)
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

/// A core/v1 Event about `pod`, as upstream's scheduler records it.
fn pod_event(pod: &Pod, type_: &str, reason: &str, message: String) -> CoreEvent {
    let now = now_time();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let nanos = now.0.as_nanosecond();
    CoreEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{nanos:x}")),
            namespace: pod.metadata.namespace.clone(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        reporting_component: Some(SCHEDULER_NAME.into()),
        reporting_instance: Some(format!("{SCHEDULER_NAME}-skiff")),
        action: Some(
            if reason == "Scheduled" {
                "Binding"
            } else {
                "Scheduling"
            }
            .into(),
        ),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

/// The merge patch that sets `PodScheduled=False/Unschedulable` with `message`, or `None`
/// when the pod already says exactly that. A merge patch replaces the whole list, so the
/// other conditions are carried over.
fn unschedulable_patch(pod: &Pod, message: &str) -> Option<serde_json::Value> {
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let current = conditions.iter().find(|c| c.type_ == "PodScheduled");
    if let Some(c) = current {
        if c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
        {
            return None;
        }
    }
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
    Some(serde_json::json!({ "status": { "conditions": out } }))
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
async fn drive<N, P>(
    client: kube::Client,
    config: Config,
    nodes: N,
    pods: P,
    cancel: CancellationToken,
) -> Result<(), Error>
where
    N: Stream<Item = watcher::Result<Event<Node>>> + Send,
    P: Stream<Item = watcher::Result<Event<Pod>>> + Send,
{
    let mut nodes = std::pin::pin!(nodes);
    let mut pods = std::pin::pin!(pods);
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
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => s.on_node(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                None => break Err(Error::WatchEnded("node")),
            },
            ev = pods.next() => match ev {
                Some(Ok(ev)) => s.on_pod(ev, Instant::now()),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => break Err(Error::WatchEnded("pod")),
            },
            _ = std::future::ready(()), if ready => {
                let (binds, failures) = s.decide(Instant::now());
                for (key, pod, node) in binds {
                    let (client, tx) = (client.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(bind(client, key, pod, node).await);
                    });
                }
                for (pod, message) in failures {
                    if let Some(patch) = unschedulable_patch(&pod, &message) {
                        queue_write(Write::Condition {
                            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                            name: pod.metadata.name.clone().unwrap_or_default(),
                            patch,
                        });
                    }
                    queue_write(Write::Event(Box::new(pod_event(&pod, "Warning", "FailedScheduling", message))));
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
        let patch = unschedulable_patch(&p, "0/1 nodes are available: x.").unwrap();
        let conds = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[1]["type"], "PodScheduled");
        assert_eq!(conds[1]["status"], "False");
        assert_eq!(conds[1]["reason"], "Unschedulable");
        let applied: Vec<PodCondition> = serde_json::from_value(conds.clone().into()).unwrap();
        p.status.as_mut().unwrap().conditions = Some(applied);
        assert!(unschedulable_patch(&p, "0/1 nodes are available: x.").is_none());
        assert!(unschedulable_patch(&p, "0/2 nodes are available: y.").is_some());
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
