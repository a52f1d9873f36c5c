//! The ReplicaSet controller: keeps `spec.replicas` pods of the template alive, adopts
//! matching orphans and releases pods that stopped matching, and reports status.
//!
//! [`reconcile`] decides from plain values; [`ReplicaSetController`] feeds it from the
//! shared caches and carries its [`Action`]s out (creates in slow-start batches, events,
//! the status subresource).

use super::driver::{
    self, controller_of, controller_ref, Caches, Clock, Effects, Key, Kind, LabelMatcher, Next,
    Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use futures::future::{join_all, BoxFuture};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// At most this many pods are created or deleted in one sync (upstream's burstReplicas).
pub const BURST: usize = 500;

/// Upstream's annotation that lowers or raises a pod's claim to survive a scale-down.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// How long a writer waits for the caches to show its own writes before deciding again.
const SETTLE: Duration = Duration::from_secs(10);

/// One thing a sync does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make the ReplicaSet the controller of an orphan pod (merge patch).
    Adopt {
        /// The pod.
        pod: String,
        /// The merge patch.
        patch: Value,
    },
    /// Drop the ReplicaSet's reference from a pod that no longer matches (merge patch).
    Release {
        /// The pod.
        pod: String,
        /// The merge patch.
        patch: Value,
    },
    /// Create this many pods from the template.
    Create(usize),
    /// Delete these pods (name, uid), best candidates first.
    Delete(Vec<(String, String)>),
    /// The status to write (last; written only if it differs from the current one).
    Status(ReplicaSetStatus),
    /// Look again after this long (a pod becomes available by the clock alone).
    Requeue(Duration),
}

/// Whether a pod counts: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded")
        && phase != Some("Failed")
        && pod.metadata.deletion_timestamp.is_none()
}

/// The time a pod's Ready condition turned true, if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether a pod is ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When a pod becomes available (ready for `min_ready` seconds): `Some(t)`; `None` when
/// it is not ready.
pub fn available_at(pod: &Pod, min_ready: i32) -> Option<jiff::Timestamp> {
    let since = ready_since(pod)?;
    if min_ready <= 0 {
        return Some(jiff::Timestamp::MIN);
    }
    Some(since? + jiff::SignedDuration::from_secs(i64::from(min_ready)))
}

/// Whether a pod is available at `now`.
pub fn is_available(pod: &Pod, min_ready: i32, now: jiff::Timestamp) -> bool {
    available_at(pod, min_ready).is_some_and(|t| min_ready <= 0 || t < now)
}

/// What a ReplicaSet sync sees besides the ReplicaSet itself.
pub struct Observed<'a> {
    /// Every pod in the ReplicaSet's namespace.
    pub pods: &'a [Arc<Pod>],
    /// UIDs of ReplicaSets with the same controller (a Deployment's other ReplicaSets):
    /// their pods count when spreading deletions across nodes.
    pub related: &'a HashSet<String>,
    /// Now.
    pub now: jiff::Timestamp,
}

fn owner_refs_patch(pod: &Pod, refs: Vec<Value>) -> Value {
    json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "ownerReferences": refs,
    }})
}

/// Decides one sync of `rs`.
pub fn reconcile(rs: &ReplicaSet, observed: &Observed<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    let uid = rs.metadata.uid.as_deref().unwrap_or("");
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let spec = Some(&rs.spec);
    let selector = LabelMatcher::new(spec.map(|s| &s.selector));
    let wanted = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;

    let mut owned: Vec<&Pod> = Vec::new();
    for pod in observed
        .pods
        .iter()
        .map(Arc::as_ref)
        .filter(|p| is_active(p))
    {
        let matches = selector.matches(pod.metadata.labels.as_ref());
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else if !deleting {
                    let refs = pod
                        .owner_references()
                        .iter()
                        .filter(|o| o.uid != uid)
                        .map(|o| json!(o))
                        .collect();
                    actions.push(Action::Release {
                        pod: pod.name_any(),
                        patch: owner_refs_patch(pod, refs),
                    });
                }
            }
            Some(_) => {}
            None if matches && !deleting => {
                let mut refs: Vec<Value> =
                    pod.owner_references().iter().map(|o| json!(o)).collect();
                refs.push(json!(controller_ref(rs)));
                actions.push(Action::Adopt {
                    pod: pod.name_any(),
                    patch: owner_refs_patch(pod, refs),
                });
                owned.push(pod);
            }
            None => {}
        }
    }

    if !deleting {
        match owned.len().cmp(&wanted) {
            Ordering::Less => actions.push(Action::Create((wanted - owned.len()).min(BURST))),
            Ordering::Greater => {
                let n = (owned.len() - wanted).min(BURST);
                let victims = pods_to_delete(&owned, observed, n);
                actions.push(Action::Delete(
                    victims
                        .into_iter()
                        .map(|p| (p.name_any(), p.metadata.uid.clone().unwrap_or_default()))
                        .collect(),
                ));
            }
            Ordering::Equal => {}
        }
    }

    let status = status(rs, &owned, observed.now);
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    if min_ready > 0 {
        // A ready pod turns available by the clock alone: look again then.
        let soonest = owned
            .iter()
            .filter_map(|p| available_at(p, min_ready))
            .filter(|t| *t >= observed.now)
            .min();
        if let Some(t) = soonest {
            let wait = t.duration_since(observed.now).unsigned_abs() + Duration::from_secs(1);
            actions.push(Action::Requeue(wait));
        }
    }
    actions.push(Action::Status(status));
    actions
}

fn nonzero(n: usize) -> Option<i32> {
    (n > 0).then(|| i32::try_from(n).unwrap_or(i32::MAX))
}

/// The status of `rs` given the active pods it owns, as upstream computes it (the
/// ReplicaFailure condition is dropped here and set by [`with_failure`] when a create or
/// delete fails).
pub fn status(rs: &ReplicaSet, owned: &[&Pod], now: jiff::Timestamp) -> ReplicaSetStatus {
    let spec = Some(&rs.spec);
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| is_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count();
    let conditions: Vec<ReplicaSetCondition> = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_.as_deref() != Some("ReplicaFailure"))
        .collect();
    ReplicaSetStatus {
        replicas: i32::try_from(owned.len()).unwrap_or(i32::MAX),
        fully_labeled_replicas: nonzero(fully_labeled),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}

/// `status` with the ReplicaFailure condition a failed create or delete sets (kept as it
/// was if already there).
pub fn with_failure(
    rs: &ReplicaSet,
    mut status: ReplicaSetStatus,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> ReplicaSetStatus {
    let existing = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
        })
        .cloned();
    let cond = existing.unwrap_or_else(|| ReplicaSetCondition {
        type_: Some("ReplicaFailure".into()),
        status: Some("True".into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now)),
    });
    status.conditions.get_or_insert_with(Vec::new).push(cond);
    status
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.annotations()
        .get(DELETION_COST)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// Upstream's logarithmic bucket of an age: pods of about the same age (same power of
/// two of nanoseconds) are taken in uid order, so scale-downs spread instead of always
/// taking the very newest. A missing time comes first.
fn age_bucket(t: Option<jiff::Timestamp>, now: jiff::Timestamp) -> i64 {
    let Some(t) = t else { return -2 };
    let age = now.as_nanosecond() - t.as_nanosecond();
    if age > 0 {
        (age as f64).log2() as i64
    } else {
        -1
    }
}

/// The sort key of upstream's order of deletion (smaller goes first): unassigned before
/// assigned, pending before unknown before running, not ready before ready, lower
/// deletion cost first, more pods on the same node first, ready more recently first,
/// more restarts first, newer first, then uid. A key, not a comparison, so the order is
/// total (upstream's comparison is not, which Rust's sort rejects).
type DeleteKey = (
    bool,
    u8,
    bool,
    i32,
    std::cmp::Reverse<usize>,
    i64,
    std::cmp::Reverse<i32>,
    i64,
    String,
);

fn delete_key(p: &Pod, rank: &HashMap<String, usize>, now: jiff::Timestamp) -> DeleteKey {
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let node_rank = if node.is_empty() {
        0
    } else {
        rank.get(&node).copied().unwrap_or(0)
    };
    let ready = ready_since(p);
    (
        !node.is_empty(),
        phase_rank(p),
        ready.is_some(),
        deletion_cost(p),
        std::cmp::Reverse(node_rank),
        ready.map_or(0, |since| age_bucket(since, now)),
        std::cmp::Reverse(max_restarts(p)),
        age_bucket(p.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

fn pods_to_delete<'p>(owned: &[&'p Pod], observed: &Observed<'_>, n: usize) -> Vec<&'p Pod> {
    let mut pods = owned.to_vec();
    if n < pods.len() {
        // How many active pods of this ReplicaSet and its relatives share each node.
        let mut rank: HashMap<String, usize> = HashMap::new();
        let own: HashSet<&str> = owned
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        for p in observed.pods.iter().filter(|p| is_active(p)) {
            let related = own.contains(p.metadata.uid.as_deref().unwrap_or(""))
                || controller_of(&p.metadata).is_some_and(|r| observed.related.contains(&r.uid));
            if let (true, Some(node)) =
                (related, p.spec.as_ref().and_then(|s| s.node_name.as_ref()))
            {
                *rank.entry(node.clone()).or_insert(0) += 1;
            }
        }
        pods.sort_by_cached_key(|p| delete_key(p, &rank, observed.now));
    }
    pods.truncate(n);
    pods
}

/// The pod a ReplicaSet creates from its template, as upstream builds it.
pub fn pod_from_template(rs: &ReplicaSet) -> Value {
    let name = rs.name_any();
    let template = Some(&rs.spec).and_then(|s| s.template.as_ref());
    let meta = template.and_then(|t| t.metadata.as_ref());
    // A name ending in '-' cannot be followed by nothing; upstream falls back to the bare
    // name when "<name>-" is not a valid prefix.
    let prefix = if name.len() < 253 {
        format!("{name}-")
    } else {
        name.clone()
    };
    let mut metadata = json!({
        "generateName": prefix,
        "namespace": rs.namespace(),
        "ownerReferences": [controller_ref(rs)],
    });
    if let Some(m) = meta {
        if let Some(l) = &m.labels {
            metadata["labels"] = json!(l);
        }
        if let Some(a) = &m.annotations {
            metadata["annotations"] = json!(a);
        }
        if let Some(f) = &m.finalizers {
            metadata["finalizers"] = json!(f);
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.and_then(|t| t.spec.as_ref()),
    })
}

/// Registers the controller's hooks and returns its workers (5, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    ReplicaSetController::watch(&ctx.caches, &queue);
    let controller = ReplicaSetController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("replicaset-controller"),
    );
    ctx.workers(controller, queue, 5)
}

/// The controller: caches in, API calls out.
pub struct ReplicaSetController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    events: Arc<Recorder>,
    settle: Duration,
}

impl ReplicaSetController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(ReplicaSetController {
            caches,
            effects,
            clock,
            events,
            settle: SETTLE,
        })
    }

    /// Registers the cache hooks that fill `queue`: a ReplicaSet's own changes, its pods'
    /// changes, and orphan pods' changes for every ReplicaSet that selects them.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        caches
            .replicasets
            .on_change(Box::new(move |rs: &ReplicaSet, _| {
                q.add(Key::of(&rs.metadata))
            }));
        let (q, sets) = (queue.clone(), caches.replicasets.clone());
        caches.pods.on_change(Box::new(move |pod: &Pod, _| {
            driver::queue_controller(&q, &sets, "apps", "ReplicaSet", &pod.metadata, |rs| {
                let sel = LabelMatcher::new(Some(&rs.spec).map(|s| &s.selector));
                sel.matches(pod.metadata.labels.as_ref())
            });
        }));
    }

    fn related(&self, rs: &ReplicaSet) -> HashSet<String> {
        let Some(owner) = controller_of(&rs.metadata) else {
            return HashSet::new();
        };
        self.caches
            .replicasets
            .in_namespace(&rs.namespace().unwrap_or_default())
            .iter()
            .filter(|o| controller_of(&o.metadata).is_some_and(|r| r.uid == owner.uid))
            .filter_map(|o| o.metadata.uid.clone())
            .collect()
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let Some(rs) = self.caches.replicasets.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        let pods = self.caches.pods.in_namespace(&key.namespace);
        let related = self.related(&rs);
        let now = self.clock.now();
        let actions = reconcile(
            &rs,
            &Observed {
                pods: &pods,
                related: &related,
                now,
            },
        );
        self.apply(&rs, actions, now).await
    }

    /// Carries out `actions` in order. A failed adoption or release stops the sync
    /// (upstream does not manage replicas on a partial claim); a failed create or delete
    /// still writes the status, with ReplicaFailure.
    pub async fn apply(
        &self,
        rs: &ReplicaSet,
        actions: Vec<Action>,
        now: jiff::Timestamp,
    ) -> driver::Result<Next> {
        let ns = rs.namespace().unwrap_or_default();
        let pods = Kind::pods();
        let mut next = Next::Done;
        let mut failure: Option<(&'static str, String)> = None;
        for action in actions {
            match action {
                Action::Adopt { pod, patch } | Action::Release { pod, patch } => {
                    match self.effects.merge_patch(&pods, &ns, &pod, patch).await {
                        Ok(_) => {}
                        // Gone or changed meanwhile: its event brings us back.
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(e) => return Err(driver::api_error("patch", &pods, &ns, &pod)(e)),
                    }
                }
                Action::Create(n) => {
                    if let Err(msg) = self.create(rs, n).await {
                        failure = Some(("FailedCreate", msg));
                    }
                }
                Action::Delete(victims) => {
                    if let Err(msg) = self.delete(rs, victims).await {
                        failure = Some(("FailedDelete", msg));
                    }
                }
                Action::Requeue(d) => next = next.min(Next::After(d)),
                Action::Status(status) => {
                    let status = match &failure {
                        Some((reason, msg)) => with_failure(rs, status, reason, msg, now),
                        None => status,
                    };
                    if rs.status.as_ref() != Some(&status) {
                        self.write_status(rs, status).await?;
                    }
                }
            }
        }
        if failure.is_some() {
            return Ok(Next::After(Duration::from_secs(5)));
        }
        Ok(next)
    }

    async fn write_status(&self, rs: &ReplicaSet, status: ReplicaSetStatus) -> driver::Result<()> {
        let ns = rs.namespace().unwrap_or_default();
        let kind = Kind::replicasets();
        let mut body = rs.clone();
        body.status = Some(status);
        let body = serde_json::to_value(&body)
            .map_err(|e| driver::Error::Encode("ReplicaSet".into(), e))?;
        match self
            .effects
            .replace_status(&kind, &ns, &rs.name_any(), body)
            .await
        {
            Ok(_) => Ok(()),
            // A newer ReplicaSet is on its way through the watch, and will bring us back.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(driver::api_error(
                "update status of",
                &kind,
                &ns,
                &rs.name_any(),
            )(e)),
        }
    }

    /// Creates `n` pods in batches of 1, 2, 4, …, stopping at the first failure.
    async fn create(&self, rs: &ReplicaSet, n: usize) -> Result<(), String> {
        let ns = rs.namespace().unwrap_or_default();
        let kind = Kind::pods();
        let template = pod_from_template(rs);
        let me = reference(rs);
        let mut made: Vec<String> = Vec::new();
        let (mut left, mut batch) = (n, 1usize);
        let mut failed = None;
        while left > 0 && failed.is_none() {
            let size = batch.min(left);
            let results =
                join_all((0..size).map(|_| self.effects.create(&kind, &ns, template.clone())))
                    .await;
            let mut notes = Vec::new();
            for r in results {
                match r {
                    Ok(pod) => {
                        let name = pod
                            .pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        notes.push((
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        ));
                        made.push(name);
                    }
                    Err(e) => {
                        let msg = driver::api_message(&e);
                        notes.push((
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating: {msg}"),
                        ));
                        failed = Some(msg);
                    }
                }
            }
            join_all(
                notes
                    .iter()
                    .map(|(t, reason, msg)| self.events.record(&me, *t, reason, msg)),
            )
            .await;
            left -= size;
            batch *= 2;
        }
        let cache = &self.caches.pods;
        cache
            .wait_for(
                |c| made.iter().all(|n| c.get(&ns, n).is_some()),
                self.settle,
            )
            .await;
        failed.map_or(Ok(()), Err)
    }

    async fn delete(&self, rs: &ReplicaSet, victims: Vec<(String, String)>) -> Result<(), String> {
        let ns = rs.namespace().unwrap_or_default();
        let kind = Kind::pods();
        let me = reference(rs);
        let results = join_all(
            victims
                .iter()
                .map(|(name, uid)| self.effects.delete(&kind, &ns, name, Some(uid), None)),
        )
        .await;
        let mut failed = None;
        let mut notes = Vec::new();
        for ((name, _), r) in victims.iter().zip(results) {
            match r {
                Ok(()) => notes.push((
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                )),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    let msg = driver::api_message(&e);
                    notes.push((
                        EventType::Warning,
                        "FailedDelete",
                        format!("Error deleting: {msg}"),
                    ));
                    failed = Some(msg);
                }
            }
        }
        join_all(
            notes
                .iter()
                .map(|(t, reason, msg)| self.events.record(&me, *t, reason, msg)),
        )
        .await;
        let gone: BTreeMap<&str, &str> = victims
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        self.caches
            .pods
            .wait_for(
                |c| {
                    gone.iter().all(|(n, u)| {
                        c.get(&ns, n).is_none_or(|p| {
                            p.metadata.deletion_timestamp.is_some()
                                || p.metadata.uid.as_deref() != Some(u)
                        })
                    })
                },
                self.settle,
            )
            .await;
        failed.map_or(Ok(()), Err)
    }
}

impl Reconciler for ReplicaSetController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn sync<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{FixedClock, Recording};
    use crate::controllers::driver::Cache;
    use futures::stream;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference,
    };
    use kube::runtime::watcher;
    use std::sync::Mutex;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn labels(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-7d9c8b6f5".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: labels(&[("app", "web")]),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "web"), ("tier", "front")]),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec::default()),
                }),
                min_ready_seconds: None,
            },
            status: None,
        }
    }

    fn owner(uid: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "x".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }])
    }

    /// A pod owned by the ReplicaSet, created at `created`, ready since `ready` if any.
    fn pod(name: &str, created: i64, node: &str, phase: &str, ready: Option<i64>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("u-{name}")),
                labels: labels(&[("app", "web"), ("tier", "front")]),
                owner_references: owner("rs-uid"),
                creation_timestamp: Some(Time(t(created))),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.map(|r| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(t(r))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    fn decide(rs: &ReplicaSet, pods: &[Arc<Pod>], now: i64) -> Vec<Action> {
        reconcile(
            rs,
            &Observed {
                pods,
                related: &HashSet::new(),
                now: t(now),
            },
        )
    }

    #[test]
    fn creates_what_is_missing_up_to_the_burst() {
        let a = decide(&rs(3), &[pod("a", 0, "", "Pending", None)], 10);
        assert_eq!(a[0], Action::Create(2));
        assert!(matches!(&a[1], Action::Status(s) if s.replicas == 1));
        assert_eq!(decide(&rs(2000), &[], 10)[0], Action::Create(BURST));
        let p = pod_from_template(&rs(1));
        assert_eq!(p["metadata"]["generateName"], "web-7d9c8b6f5-");
        assert_eq!(p["metadata"]["labels"]["tier"], "front");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "rs-uid");
    }

    #[test]
    fn adopts_matching_orphans_and_releases_pods_that_stopped_matching() {
        let mut orphan = (*pod("orphan", 0, "", "Running", None)).clone();
        orphan.metadata.owner_references = None;
        let mut strayed = (*pod("strayed", 0, "", "Running", None)).clone();
        strayed.metadata.labels = labels(&[("app", "other")]);
        let mut foreign = (*pod("foreign", 0, "", "Running", None)).clone();
        foreign.metadata.owner_references = owner("someone-else");
        let mut finished = (*pod("finished", 0, "", "Succeeded", None)).clone();
        finished.metadata.owner_references = None;
        let pods: Vec<Arc<Pod>> = [orphan, strayed, foreign, finished]
            .into_iter()
            .map(Arc::new)
            .collect();
        let a = decide(&rs(1), &pods, 10);
        assert!(matches!(&a[0], Action::Adopt { pod, patch }
            if pod == "orphan" && patch["metadata"]["ownerReferences"][0]["uid"] == "rs-uid"
                && patch["metadata"]["resourceVersion"] == "7"));
        assert!(matches!(&a[1], Action::Release { pod, patch }
            if pod == "strayed" && patch["metadata"]["ownerReferences"] == json!([])));
        // The adopted pod counts: nothing to create.
        assert!(matches!(&a[2], Action::Status(s) if s.replicas == 1));
        // A ReplicaSet being deleted neither adopts, releases nor creates.
        let mut gone = rs(3);
        gone.metadata.deletion_timestamp = Some(Time(t(0)));
        let a = decide(&gone, &pods, 10);
        assert!(matches!(&a[..], [Action::Status(s)] if s.replicas == 0));
    }

    #[test]
    fn deletes_unscheduled_then_pending_then_not_ready_then_newest() {
        let pods = vec![
            pod("old-ready", 0, "n4", "Running", Some(5)),
            pod("unscheduled", 0, "", "Pending", None),
            pod("pending", 0, "n1", "Pending", None),
            pod("not-ready", 0, "n2", "Running", None),
            pod("new-ready", 3000, "n3", "Running", Some(3005)),
        ];
        let order = |n: i32| match &decide(&rs(n), &pods, 4000)[0] {
            Action::Delete(v) => v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(order(4), ["unscheduled"]);
        assert_eq!(order(2), ["unscheduled", "pending", "not-ready"]);
        assert_eq!(
            order(1),
            ["unscheduled", "pending", "not-ready", "new-ready"]
        );
        assert_eq!(order(0).len(), 5);
    }

    #[test]
    fn ordering_many_pods_of_about_the_same_age_is_a_total_order() {
        // Same and nearby creation times, mixed readiness: the sort must not panic (it
        // did with upstream's comparison, which is not transitive).
        let pods: Vec<Arc<Pod>> = (0..3000)
            .map(|i| {
                let ready = (i % 3 == 0).then_some(i64::from(i % 7));
                pod(
                    &format!("p{i}"),
                    i64::from(i % 5),
                    &format!("n{}", i % 4),
                    "Running",
                    ready,
                )
            })
            .collect();
        match &decide(&rs(100), &pods, 10)[0] {
            Action::Delete(v) => assert_eq!(v.len(), BURST),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spreads_deletions_over_crowded_nodes_first() {
        let pods = vec![
            pod("alone", 0, "n1", "Running", Some(1)),
            pod("crowded-1", 0, "n2", "Running", Some(1)),
            pod("crowded-2", 0, "n2", "Running", Some(1)),
        ];
        match &decide(&rs(2), &pods, 100)[0] {
            Action::Delete(v) => assert!(v[0].0.starts_with("crowded")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled() {
        let mut r = rs(3);
        r.spec.min_ready_seconds = Some(10);
        let mut partly = (*pod("partly", 0, "n", "Running", Some(0))).clone();
        partly.metadata.labels = labels(&[("app", "web")]);
        let pods = vec![
            pod("a", 0, "n", "Running", Some(0)),
            pod("b", 0, "n", "Running", Some(95)),
            Arc::new(partly),
        ];
        let a = decide(&r, &pods, 100);
        let Some(Action::Status(s)) = a.last() else {
            panic!("{a:?}")
        };
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.observed_generation, Some(2));
        // "b" becomes available at 105: look again just after.
        assert!(a.contains(&Action::Requeue(Duration::from_secs(6))));
        let failed = with_failure(&r, s.clone(), "FailedCreate", "quota", t(100));
        let c = &failed.conditions.unwrap()[0];
        assert_eq!(c.reason.as_deref(), Some("FailedCreate"));
        assert_eq!(c.message.as_deref(), Some("quota"));
    }

    fn controller(fx: Arc<Recording>) -> (Arc<ReplicaSetController>, Arc<Caches>) {
        let caches = Arc::new(Caches::new());
        let clock = Arc::new(FixedClock(Mutex::new(t(0))));
        let events = Arc::new(Recorder::new(
            fx.clone(),
            clock.clone(),
            "replicaset-controller",
        ));
        (
            ReplicaSetController::new(caches.clone(), fx, clock, events),
            caches,
        )
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

    #[tokio::test(start_paused = true)]
    async fn driver_creates_in_slow_start_batches_and_reports_failures() {
        let fx = Arc::new(Recording::default());
        *fx.fail_creates_after.lock().unwrap() = Some(3);
        let (c, caches) = controller(fx.clone());
        let queue = Queue::new();
        ReplicaSetController::watch(&caches, &queue);
        feed(&caches.replicasets, vec![rs(10)]).await;
        feed(&caches.pods, vec![]).await;
        let key = queue.next().await;
        assert_eq!(key.name, "web-7d9c8b6f5");
        let next = c.sync(&key).await.unwrap();
        assert_eq!(next, Next::After(Duration::from_secs(5)));
        let calls = fx.calls();
        let creates = calls.iter().filter(|c| c.starts_with("create Pod")).count();
        // Batches of 1 and 2 succeed; the batch of 4 fails; the remaining 3 are skipped.
        assert_eq!(creates, 7, "{calls:#?}");
        assert!(calls
            .iter()
            .any(|c| c.starts_with("create Pod default/web-7d9c8b6f5-0")));
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("create Event"))
                .count(),
            4,
            "{calls:#?}"
        );
        let status = calls
            .iter()
            .find(|c| c.starts_with("status ReplicaSet"))
            .unwrap();
        assert!(
            status.contains("ReplicaFailure") && status.contains("FailedCreate"),
            "{status}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn driver_deletes_extra_pods_with_events() {
        let fx = Arc::new(Recording::default());
        let (c, caches) = controller(fx.clone());
        let queue = Queue::new();
        ReplicaSetController::watch(&caches, &queue);
        feed(&caches.replicasets, vec![rs(1)]).await;
        let pods = [
            pod("a", 0, "n", "Running", Some(1)),
            pod("b", 5, "", "Pending", None),
        ];
        feed(&caches.pods, pods.iter().map(|p| (**p).clone()).collect()).await;
        let key = queue.next().await;
        assert_eq!(c.sync(&key).await.unwrap(), Next::Done);
        let calls = fx.calls();
        assert!(
            calls.contains(&"delete Pod default/b None".to_string()),
            "{calls:#?}"
        );
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("create Event default/web-7d9c8b6f5.")),
            "{calls:#?}"
        );
    }
}
