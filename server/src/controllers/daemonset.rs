//! The DaemonSet controller: one pod of the template on every node that should run it,
//! rolled over to a new template by RollingUpdate (maxUnavailable, or maxSurge) or left
//! to the user by OnDelete, with one ControllerRevision per template (what `kubectl
//! rollout history|undo ds` read) and the status `kubectl get ds` and `kubectl rollout
//! status ds` show.
//!
//! As upstream, a pod is made for a node by giving it required node affinity
//! `metadata.name In [node]` (the scheduler then binds it), labelled
//! `controller-revision-hash` (and `pod-template-generation`), and given the daemon
//! tolerations (not-ready and unreachable NoExecute; disk, memory and pid pressure and
//! unschedulable NoSchedule; network-unavailable for host-network pods). A node runs the
//! pod if it passes the template's node name, nodeSelector, required node affinity and
//! the NoSchedule/NoExecute taints of `spec.taints`; a pod already there stays as long as
//! no NoExecute taint is left untolerated. Pods on nodes that are gone are deleted too.
//!
//! [`reconcile`] decides from plain values; [`DaemonSetController`] feeds it from the
//! shared caches and carries its [`Action`]s out.

use super::deployment::template_hash;
use super::driver::{
    self, controller_of, controller_ref, Caches, Clock, Effects, Key, Kind, LabelMatcher, Next,
    Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use super::replicaset::{available_at, is_available, is_ready};
use futures::future::{join_all, BoxFuture};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label naming the ControllerRevision a pod was made from (and on the revision).
pub const HASH_LABEL: &str = "controller-revision-hash";
/// The label carrying the DaemonSet's template generation a pod was made from.
pub const GENERATION_LABEL: &str = "pod-template-generation";
/// The DaemonSet annotation upstream's API server keeps the template generation in.
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// At most this many pods are created or deleted in one sync (upstream's BurstReplicas).
pub const BURST: usize = 250;

/// Taint keys the daemon tolerations name.
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// How long a writer waits for the caches to show its own writes before deciding again.
const SETTLE: Duration = Duration::from_secs(10);
/// The first delay before another failed pod on the same node is deleted; it doubles.
const FAILED_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest such delay (upstream's 15 minutes).
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// One thing a sync does, in the order returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Patch a pod (adopt, release or relabel; merge patch).
    PatchPod {
        /// The pod.
        pod: String,
        /// The merge patch.
        patch: Value,
    },
    /// Patch a ControllerRevision (adopt, release, label or renumber; merge patch).
    PatchRevision {
        /// The revision.
        name: String,
        /// The merge patch.
        patch: Value,
    },
    /// Create the revision of the current template.
    CreateRevision(Box<ControllerRevision>),
    /// Create one pod of `template` on each of `nodes`.
    Create {
        /// The pod template: labels and tolerations already added.
        template: Box<PodTemplateSpec>,
        /// The nodes.
        nodes: Vec<String>,
    },
    /// Delete these pods (name, uid).
    Delete(Vec<(String, String)>),
    /// Record an event about the DaemonSet.
    Event {
        /// Normal or Warning.
        type_: EventType,
        /// The reason.
        reason: &'static str,
        /// The message.
        message: String,
    },
    /// A finished pod on this node is being deleted: lengthen the node's backoff.
    Backoff(String),
    /// Delete these ControllerRevisions (name, uid).
    DeleteRevisions(Vec<(String, String)>),
    /// The status to write (written only if it differs from the current one).
    Status(Box<DaemonSetStatus>),
    /// Look again after this long (a pod becomes available by the clock, a backoff ends).
    Requeue(Duration),
}

/// What a DaemonSet sync sees besides the DaemonSet itself.
pub struct Observed<'a> {
    /// Every node.
    pub nodes: &'a [Arc<Node>],
    /// Every pod in the DaemonSet's namespace.
    pub pods: &'a [Arc<Pod>],
    /// Every ControllerRevision in the DaemonSet's namespace.
    pub revisions: &'a [Arc<ControllerRevision>],
    /// Nodes on which a finished pod may not be deleted before the given time.
    pub backoff: &'a HashMap<String, jiff::Timestamp>,
    /// Now.
    pub now: jiff::Timestamp,
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

fn victim(pod: &Pod) -> (String, String) {
    (pod.name_any(), pod.metadata.uid.clone().unwrap_or_default())
}

fn secs(d: jiff::SignedDuration) -> Duration {
    d.unsigned_abs()
}

// ---------------------------------------------------------------------------------------
// Which nodes run the pod.

fn same(a: &Option<String>, b: &Option<String>) -> bool {
    a.as_deref().unwrap_or("") == b.as_deref().unwrap_or("")
}

/// Adds `t` to the tolerations, replacing any with the same key, operator, value and
/// effect (upstream's `AddOrUpdateTolerationInPodSpec`).
fn add_or_update_toleration(spec: &mut PodSpec, t: Toleration) {
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    let mut found = false;
    for existing in list.iter_mut() {
        if same(&existing.key, &t.key)
            && same(&existing.operator, &t.operator)
            && same(&existing.value, &t.value)
            && same(&existing.effect, &t.effect)
        {
            *existing = t.clone();
            found = true;
        }
    }
    if !found {
        list.push(t);
    }
}

/// Adds the tolerations every daemon pod gets, so node problems neither keep it off a
/// node nor evict it.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        (NOT_READY, "NoExecute"),
        (UNREACHABLE, "NoExecute"),
        (DISK_PRESSURE, "NoSchedule"),
        (MEMORY_PRESSURE, "NoSchedule"),
        (PID_PRESSURE, "NoSchedule"),
        (UNSCHEDULABLE, "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push((NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    for (key, effect) in wanted {
        add_or_update_toleration(
            spec,
            Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            },
        );
    }
}

/// Whether `t` tolerates `taint` (upstream's `ToleratesTaint`).
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
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
    match t.operator.as_deref().unwrap_or("") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn untolerated(taints: &[Taint], tolerations: &[Toleration], effects: &[&str]) -> bool {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    let number = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (value.and_then(number), values) {
            (Some(have), [want]) => match number(want) {
                Some(want) if req.operator == "Gt" => have > want,
                Some(want) => have < want,
                None => false,
            },
            _ => false,
        },
        _ => false,
    }
}

/// A node selector term: every expression and field matches (an empty term matches
/// nothing, as upstream).
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    let name = node.metadata.name.as_deref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, name))
}

/// Whether a node fits the pod's nodeSelector and required node affinity.
fn fits_affinity(spec: &PodSpec, node: &Node) -> bool {
    if let Some(selector) = &spec.node_selector {
        let labels = node.metadata.labels.as_ref();
        if !selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// Whether `node` should run the daemon pod, and whether a daemon pod already there may
/// keep running (upstream's `NodeShouldRunDaemonPod`). `spec` is the template's pod spec
/// with the daemon tolerations added.
pub fn node_should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    let name = node.metadata.name.as_deref().unwrap_or("");
    if let Some(wanted) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if wanted != name {
            return (false, false);
        }
    }
    if !fits_affinity(spec, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(taints, tolerations, &["NoExecute"]));
    }
    (true, true)
}

/// The node a daemon pod is for: its `spec.nodeName`, or else the one its required node
/// affinity names (`metadata.name In [node]`), as upstream's `GetTargetNodeName`.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    for term in terms {
        for f in term.match_fields.as_deref().unwrap_or_default() {
            if f.key == "metadata.name" && f.operator == "In" {
                return match f.values.as_deref() {
                    Some([one]) => Some(one.clone()),
                    _ => None,
                };
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Templates, pods and revisions.

fn template_of(ds: &DaemonSet) -> PodTemplateSpec {
    ds.spec.template.clone()
}

/// The template generation upstream's API server keeps in an annotation, if any.
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION)?
        .parse()
        .ok()
}

/// The template pods are made from: the DaemonSet's, with the daemon tolerations, the
/// revision's hash and the template generation (upstream's `CreatePodTemplate`).
pub fn pod_template(ds: &DaemonSet, hash: &str, generation: Option<i64>) -> PodTemplateSpec {
    let mut t = template_of(ds);
    add_daemon_tolerations(t.spec.get_or_insert_with(Default::default));
    let labels = t
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    if let Some(g) = generation {
        labels.insert(GENERATION_LABEL.into(), g.to_string());
    }
    if !hash.is_empty() {
        labels.insert(HASH_LABEL.into(), hash.into());
    }
    t
}

/// `affinity` with its required node affinity replaced by `metadata.name In [node]`
/// (upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the node already passed the
/// template's own terms).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    match na
        .required_during_scheduling_ignored_during_execution
        .as_mut()
    {
        Some(required) => required.node_selector_terms = vec![term],
        None => {
            na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
                node_selector_terms: vec![term],
            });
        }
    }
    affinity
}

/// The pod the DaemonSet creates on `node` from `template` (see [`pod_template`]).
pub fn pod_for_node(ds: &DaemonSet, template: &PodTemplateSpec, node: &str) -> Value {
    let name = ds.name_any();
    // "<name>-" must be a valid name prefix; upstream falls back to the bare name.
    let prefix = if name.len() < 253 {
        format!("{name}-")
    } else {
        name.clone()
    };
    let mut metadata = json!({
        "generateName": prefix,
        "namespace": ds.namespace(),
        "ownerReferences": [controller_ref(ds)],
    });
    if let Some(m) = &template.metadata {
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
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
    })
}

/// A revision's data: a patch that replaces the DaemonSet's template with this one.
pub fn revision_data(ds: &DaemonSet) -> Value {
    let mut template = serde_json::to_value(template_of(ds)).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut template {
        m.insert("$patch".into(), "replace".into());
    }
    json!({"spec": {"template": template}})
}

fn revision_hash(r: &ControllerRevision) -> String {
    label(&r.metadata, HASH_LABEL)
        .map(String::from)
        .unwrap_or_else(|| r.name_any())
}

/// The revision of the DaemonSet's current template, named `<name>-<hash>`.
pub fn snapshot(ds: &DaemonSet, hash: &str, revision: i64) -> ControllerRevision {
    let mut labels = template_of(ds)
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![controller_ref(ds)]),
            ..Default::default()
        },
        data: RawExtension(revision_data(ds)),
        revision: Some(revision),
    }
}

/// Whether a pod is of the current template: its hash, or its template generation.
fn is_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let hash_matches = !hash.is_empty() && label(&pod.metadata, HASH_LABEL) == Some(hash);
    let generation_matches = generation
        .is_some_and(|g| label(&pod.metadata, GENERATION_LABEL) == Some(g.to_string().as_str()));
    hash_matches || generation_matches
}

/// Upstream's order of a node's pods: scheduled first, then oldest, then by name.
fn pod_order(p: &Pod) -> (bool, Option<jiff::Timestamp>, String) {
    let unscheduled = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    (
        unscheduled,
        p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        p.name_any(),
    )
}

// ---------------------------------------------------------------------------------------
// Update strategy.

fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// An int-or-percent against `total`, percentages rounded up (as upstream does for
/// DaemonSets); missing is 0.
fn scaled_up(v: Option<&IntOrString>, total: usize) -> usize {
    let n = match v {
        None => 0,
        Some(IntOrString::Int(n)) => i64::from(*n),
        Some(IntOrString::String(s)) => {
            let percent = s.trim_end_matches('%').parse::<i64>().unwrap_or(0);
            let x = percent * total as i64;
            (x + 99).div_euclid(100)
        }
    };
    usize::try_from(n).unwrap_or(0)
}

/// maxSurge and maxUnavailable against `desired` nodes (both zero: one unavailable).
pub fn fenceposts(ds: &DaemonSet, desired: usize) -> (usize, usize) {
    if !is_rolling(ds) {
        return (0, 0);
    }
    let ru = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref());
    let surge = scaled_up(ru.and_then(|r| r.max_surge.as_ref()), desired);
    let unavailable = scaled_up(ru.and_then(|r| r.max_unavailable.as_ref()), desired);
    if desired > 0 && surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn allows_surge(ds: &DaemonSet) -> bool {
    fenceposts(ds, 1).0 > 0
}

/// A node's one current and one old pod, ignoring pods being deleted; `None` when it has
/// more than one of either (the manage step cleans that up first).
fn updated_and_old<'p>(
    pods: &[&'p Pod],
    hash: &str,
    generation: Option<i64>,
) -> Option<(Option<&'p Pod>, Option<&'p Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().copied().filter(|p| !deleting(p)) {
        let slot = if is_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.replace(p).is_some() {
            return None;
        }
    }
    Some((new, old))
}

// ---------------------------------------------------------------------------------------
// The decision.

fn owner_refs_patch(meta: &ObjectMeta, refs: Vec<Value>) -> Value {
    json!({"metadata": {
        "resourceVersion": meta.resource_version,
        "ownerReferences": refs,
    }})
}

fn adopt_patch(ds: &DaemonSet, meta: &ObjectMeta) -> Value {
    let mut refs: Vec<Value> = meta
        .owner_references
        .iter()
        .flatten()
        .map(|o| json!(o))
        .collect();
    refs.push(json!(controller_ref(ds)));
    owner_refs_patch(meta, refs)
}

fn release_patch(uid: &str, meta: &ObjectMeta) -> Value {
    let refs = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.uid != uid)
        .map(|o| json!(o))
        .collect();
    owner_refs_patch(meta, refs)
}

fn selects_everything(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Sorts out which objects of a kind the DaemonSet owns: its own that still match,
/// orphans that match (adopted, unless being deleted); its own that stopped matching
/// are released.
fn claim<'o, T: kube::Resource + 'o>(
    ds: &DaemonSet,
    objects: impl Iterator<Item = &'o T>,
    mut patch: impl FnMut(String, Value),
) -> Vec<&'o T> {
    let uid = ds.metadata.uid.as_deref().unwrap_or("");
    let selector = LabelMatcher::new(Some(&ds.spec.selector));
    let mut owned = Vec::new();
    for o in objects {
        let meta = o.meta();
        let matches = selector.matches(meta.labels.as_ref());
        let gone = meta.deletion_timestamp.is_some();
        match controller_of(meta) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(o);
                } else if !gone {
                    patch(o.name_any(), release_patch(uid, meta));
                }
            }
            Some(_) => {}
            None if matches && !gone => {
                patch(o.name_any(), adopt_patch(ds, meta));
                owned.push(o);
            }
            None => {}
        }
    }
    owned
}

/// What the revision step settled: the current hash and revision number, and the old
/// revisions.
struct History<'a> {
    hash: String,
    revision: i64,
    old: Vec<&'a ControllerRevision>,
}

/// Finds (or makes) the revision of the current template, numbers it above the old
/// ones, and removes duplicates of it (upstream's `constructHistory`).
fn history<'a>(
    ds: &DaemonSet,
    revisions: Vec<&'a ControllerRevision>,
    owned_pods: &[&Pod],
    actions: &mut Vec<Action>,
) -> History<'a> {
    let data = revision_data(ds);
    let (mut current, old): (Vec<_>, Vec<_>) =
        revisions.into_iter().partition(|r| r.data.0 == data);
    let next = old.iter().filter_map(|r| r.revision).max().unwrap_or(0) + 1;
    current.sort_by_key(|r| (r.revision.unwrap_or(0), r.name_any()));
    let Some(keep) = current.pop() else {
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&template_of(ds), collisions);
        actions.push(Action::CreateRevision(Box::new(snapshot(ds, &hash, next))));
        return History {
            hash,
            revision: next,
            old,
        };
    };
    let hash = revision_hash(keep);
    if !current.is_empty() {
        // Duplicates of the current revision: their pods take the kept one's hash.
        let dup_hashes: HashSet<String> = current.iter().map(|r| revision_hash(r)).collect();
        for p in owned_pods {
            let h = label(&p.metadata, HASH_LABEL).unwrap_or("");
            if h != hash && dup_hashes.contains(h) {
                actions.push(Action::PatchPod {
                    pod: p.name_any(),
                    patch: json!({"metadata": {"labels": {HASH_LABEL: hash}}}),
                });
            }
        }
        actions.push(Action::DeleteRevisions(
            current
                .iter()
                .map(|r| (r.name_any(), r.metadata.uid.clone().unwrap_or_default()))
                .collect(),
        ));
    }
    if label(&keep.metadata, HASH_LABEL).is_none() {
        actions.push(Action::PatchRevision {
            name: keep.name_any(),
            patch: json!({"metadata": {"labels": {HASH_LABEL: hash}}}),
        });
    }
    let revision = if keep.revision.unwrap_or(0) < next {
        actions.push(Action::PatchRevision {
            name: keep.name_any(),
            patch: json!({"revision": next}),
        });
        next
    } else {
        keep.revision.unwrap_or(0)
    };
    History {
        hash,
        revision,
        old,
    }
}

fn sooner(slot: &mut Option<Duration>, d: Duration) {
    *slot = Some(slot.map_or(d, |r| r.min(d)));
}

/// Pods to create and delete.
#[derive(Default)]
struct Plan {
    create: Vec<String>,
    delete: Vec<(String, String)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// One node and what the DaemonSet thinks of it.
struct Place<'a> {
    name: &'a str,
    should_run: bool,
    should_continue: bool,
}

/// Everything the steps after the claim share.
struct Round<'a, 'o> {
    ds: &'a DaemonSet,
    observed: &'a Observed<'o>,
    hash: String,
    generation: Option<i64>,
    min_ready: i32,
    places: Vec<Place<'a>>,
    by_node: BTreeMap<String, Vec<&'a Pod>>,
    requeue: Option<Duration>,
}

impl Round<'_, '_> {
    fn available(&self, p: &Pod) -> bool {
        is_available(p, self.min_ready, self.observed.now)
    }

    fn wait(&mut self, d: Duration) {
        sooner(&mut self.requeue, d);
    }

    /// Upstream's `manage`: pods where they are missing, none where they should not be,
    /// finished pods replaced (with backoff), extra pods removed.
    fn manage(&mut self, actions: &mut Vec<Action>) -> Plan {
        let mut plan = Plan::default();
        let surge = allows_surge(self.ds);
        let ns = self.ds.namespace().unwrap_or_default();
        let mut bumped: HashSet<&str> = HashSet::new();
        let mut requeue = None;
        let places = std::mem::take(&mut self.places);
        for place in &places {
            let pods = self.by_node.get(place.name);
            if place.should_run && pods.is_none() {
                plan.create.push(place.name.to_string());
                continue;
            }
            let Some(pods) = pods else { continue };
            if !place.should_continue {
                plan.delete
                    .extend(pods.iter().filter(|p| !deleting(p)).map(|p| victim(p)));
                continue;
            }
            let mut running: Vec<&Pod> = Vec::new();
            for p in pods.iter().copied().filter(|p| !deleting(p)) {
                match phase(p) {
                    Some("Failed") => {
                        let wait_until = self.observed.backoff.get(place.name);
                        if let Some(t) = wait_until.filter(|t| **t > self.observed.now) {
                            sooner(&mut requeue, secs(t.duration_since(self.observed.now)));
                            continue;
                        }
                        if bumped.contains(place.name) {
                            sooner(&mut requeue, FAILED_BACKOFF_INITIAL);
                            continue;
                        }
                        bumped.insert(place.name);
                        actions.push(Action::Backoff(place.name.to_string()));
                        actions.push(Action::Event {
                            type_: EventType::Warning,
                            reason: "FailedDaemonPod",
                            message: format!(
                                "Found failed daemon pod {ns}/{} on node {}, will try to kill it",
                                p.name_any(),
                                place.name
                            ),
                        });
                        plan.delete.push(victim(p));
                    }
                    Some("Succeeded") => {
                        actions.push(Action::Event {
                            type_: EventType::Normal,
                            reason: "SucceededDaemonPod",
                            message: format!(
                                "Found succeeded daemon pod {ns}/{} on node {}, will try to delete it",
                                p.name_any(),
                                place.name
                            ),
                        });
                        plan.delete.push(victim(p));
                    }
                    _ => running.push(p),
                }
            }
            running.sort_by_key(|p| pod_order(p));
            if !surge {
                // One pod per node: the oldest stays.
                plan.delete
                    .extend(running.iter().skip(1).map(|p| victim(p)));
                continue;
            }
            if running.is_empty() {
                if place.should_run {
                    plan.create.push(place.name.to_string());
                }
                continue;
            }
            // Surging: keep the oldest new pod, and the oldest old pod only while it is
            // ready and the new one is not yet available.
            let (mut oldest_new, mut oldest_old) = (None, None);
            for p in running {
                let slot = if label(&p.metadata, HASH_LABEL) == Some(self.hash.as_str()) {
                    &mut oldest_new
                } else {
                    &mut oldest_old
                };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    plan.delete.push(victim(p));
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                if !is_ready(old) || self.available(new) {
                    plan.delete.push(victim(old));
                }
            }
        }
        self.places = places;
        if let Some(d) = requeue {
            self.wait(d);
        }
        // Pods for nodes that are gone: unscheduled ones can never run, and bound ones
        // have no node left to run on.
        let known: HashSet<&str> = self.places.iter().map(|p| p.name).collect();
        for (node, pods) in &self.by_node {
            if !known.contains(node.as_str()) {
                plan.delete
                    .extend(pods.iter().filter(|p| !deleting(p)).map(|p| victim(p)));
            }
        }
        plan.create.truncate(BURST);
        plan.delete.truncate(BURST);
        plan
    }

    /// Upstream's `rollingUpdate`: old pods replaced within maxUnavailable (deleted, so
    /// the manage step makes new ones) or maxSurge (new ones made beside them).
    fn rolling_update(&self) -> Plan {
        let desired = self.places.iter().filter(|p| p.should_run).count();
        let (max_surge, max_unavailable) = fenceposts(self.ds, desired);
        let should_run: HashMap<&str, bool> =
            self.places.iter().map(|p| (p.name, p.should_run)).collect();
        let mut plan = Plan::default();
        if max_surge == 0 {
            let mut unavailable = 0;
            let mut replace = Vec::new();
            let mut candidates = Vec::new();
            for pods in self.by_node.values() {
                match updated_and_old(pods, &self.hash, self.generation) {
                    // The manage step cleans up first; count the node as unavailable.
                    None => unavailable += 1,
                    Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                    Some((Some(new), None)) => {
                        if !self.available(new) {
                            unavailable += 1;
                        }
                    }
                    Some((None, Some(old))) => {
                        if self.available(old) {
                            candidates.push(victim(old));
                        } else {
                            // Not available anyway: replace it at once.
                            replace.push(victim(old));
                            unavailable += 1;
                        }
                    }
                }
            }
            let room = max_unavailable.saturating_sub(unavailable);
            plan.delete = replace;
            plan.delete
                .extend(candidates.into_iter().take(room.min(BURST)));
            return plan;
        }
        let mut surged = 0;
        let mut available = 0usize;
        let mut allowed = Vec::new();
        let mut candidates = Vec::new();
        let mut unwanted = Vec::new();
        for (node, pods) in &self.by_node {
            let Some((new, old)) = updated_and_old(pods, &self.hash, self.generation) else {
                surged += 1;
                continue;
            };
            if let Some(p) = old.or(new) {
                if self.available(p) {
                    available += 1;
                }
            }
            let runs = should_run.get(node.as_str()).copied().unwrap_or(false);
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) if !self.available(old) => {
                    if runs {
                        allowed.push(node.clone());
                    } else {
                        plan.delete.push(victim(old));
                    }
                }
                (None, Some(old)) => {
                    if !runs {
                        unwanted.push(victim(old));
                    } else if surged < max_surge {
                        candidates.push(node.clone());
                    }
                }
                (Some(new), Some(old)) => {
                    if self.available(new) {
                        plan.delete.push(victim(old));
                    } else {
                        surged += 1;
                    }
                }
            }
        }
        // Old pods on nodes that should no longer run one go only once enough pods are
        // available elsewhere.
        let deletable = available.saturating_sub(desired).min(unwanted.len());
        plan.delete.extend(unwanted.into_iter().take(deletable));
        let room = max_surge.saturating_sub(surged).min(candidates.len());
        plan.create = allowed;
        plan.create.extend(candidates.into_iter().take(room));
        plan.create.truncate(BURST);
        plan.delete.truncate(BURST);
        plan
    }

    /// Upstream's `updateDaemonSetStatus`, from the pods as they were seen.
    fn status(&self) -> DaemonSetStatus {
        let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut available, mut updated) = (0, 0, 0);
        for place in &self.places {
            let pods = self.by_node.get(place.name).filter(|p| !p.is_empty());
            if !place.should_run {
                if pods.is_some() {
                    misscheduled += 1;
                }
                continue;
            }
            desired += 1;
            let Some(pods) = pods else { continue };
            current += 1;
            let Some(first) = pods.iter().copied().min_by_key(|p| pod_order(p)) else {
                continue;
            };
            if is_ready(first) {
                ready += 1;
                if self.available(first) {
                    available += 1;
                }
            }
            if is_updated(first, &self.hash, self.generation) {
                updated += 1;
            }
        }
        let old = self.ds.status.clone().unwrap_or_default();
        let n = |x: usize| i32::try_from(x).unwrap_or(i32::MAX);
        let nonzero = |x: usize| (x > 0).then(|| n(x));
        DaemonSetStatus {
            current_number_scheduled: n(current),
            desired_number_scheduled: n(desired),
            number_misscheduled: n(misscheduled),
            number_ready: n(ready),
            number_available: nonzero(available),
            number_unavailable: nonzero(desired - available.min(desired)),
            updated_number_scheduled: nonzero(updated),
            observed_generation: self.ds.metadata.generation,
            collision_count: old.collision_count,
            conditions: old.conditions,
        }
    }
}

/// Whether the status fields the controller owns differ (zero and missing are equal).
pub fn status_differs(old: Option<&DaemonSetStatus>, new: &DaemonSetStatus) -> bool {
    let o = old.cloned().unwrap_or_default();
    let z = |v: Option<i32>| v.unwrap_or(0);
    o.desired_number_scheduled != new.desired_number_scheduled
        || o.current_number_scheduled != new.current_number_scheduled
        || o.number_misscheduled != new.number_misscheduled
        || o.number_ready != new.number_ready
        || z(o.updated_number_scheduled) != z(new.updated_number_scheduled)
        || z(o.number_available) != z(new.number_available)
        || z(o.number_unavailable) != z(new.number_unavailable)
        || o.observed_generation.unwrap_or(0) < new.observed_generation.unwrap_or(0)
}

/// Old revisions beyond `revisionHistoryLimit`, oldest first, sparing those whose hash
/// a pod still carries.
fn cleanup_history(
    ds: &DaemonSet,
    mut old: Vec<&ControllerRevision>,
    owned: &[&Pod],
) -> Vec<(String, String)> {
    let keep = ds.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut excess = old.len().saturating_sub(keep);
    if excess == 0 {
        return Vec::new();
    }
    let live: HashSet<&str> = owned
        .iter()
        .filter_map(|p| label(&p.metadata, HASH_LABEL))
        .collect();
    old.sort_by_key(|r| (r.revision.unwrap_or(0), r.name_any()));
    let mut gone = Vec::new();
    for r in old {
        if excess == 0 {
            break;
        }
        if live.contains(revision_hash(r).as_str()) {
            continue;
        }
        gone.push((r.name_any(), r.metadata.uid.clone().unwrap_or_default()));
        excess -= 1;
    }
    gone
}

/// Decides one sync of `ds`.
pub fn reconcile(ds: &DaemonSet, observed: &Observed<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    // Being deleted: the garbage collector takes its pods and revisions, and status
    // cannot be trusted while it does (upstream returns here too).
    if ds.metadata.deletion_timestamp.is_some() {
        return actions;
    }
    let spec = &ds.spec;
    if selects_everything(&spec.selector) {
        actions.push(Action::Event {
            type_: EventType::Warning,
            reason: "SelectingAll",
            message: "This daemon set is selecting all pods. A non-empty selector is required."
                .into(),
        });
        return actions;
    }

    let mut claims = Vec::new();
    let owned = claim(ds, observed.pods.iter().map(Arc::as_ref), |pod, patch| {
        claims.push(Action::PatchPod { pod, patch })
    });
    let revisions = claim(
        ds,
        observed.revisions.iter().map(Arc::as_ref),
        |name, patch| claims.push(Action::PatchRevision { name, patch }),
    );
    actions.extend(claims);

    let History {
        hash,
        revision,
        old,
    } = history(ds, revisions, &owned, &mut actions);
    let generation = template_generation(ds);
    let template = pod_template(ds, &hash, generation.or(Some(revision)));

    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in owned.iter().copied() {
        // Finished and being deleted: nothing left to do with it.
        if is_terminal(p) && deleting(p) {
            continue;
        }
        if let Some(node) = target_node(p) {
            by_node.entry(node).or_default().push(p);
        }
    }
    let pod_spec = template.spec.clone().unwrap_or_default();
    let mut nodes: Vec<&Node> = observed.nodes.iter().map(Arc::as_ref).collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let places = nodes
        .iter()
        .map(|n| {
            let (should_run, should_continue) = node_should_run(&pod_spec, n);
            Place {
                name: n.metadata.name.as_deref().unwrap_or(""),
                should_run,
                should_continue,
            }
        })
        .collect();
    let mut round = Round {
        ds,
        observed,
        hash,
        generation,
        min_ready: spec.min_ready_seconds.unwrap_or(0),
        places,
        by_node,
        requeue: None,
    };

    let mut plan = round.manage(&mut actions);
    // A rollout waits until the manage step's own changes have been seen.
    if plan.is_empty() && is_rolling(ds) {
        plan = round.rolling_update();
    }
    if !plan.create.is_empty() {
        actions.push(Action::Create {
            template: Box::new(template),
            nodes: plan.create,
        });
    }
    if !plan.delete.is_empty() {
        actions.push(Action::Delete(plan.delete));
    }
    let trimmed = cleanup_history(ds, old, &owned);
    if !trimmed.is_empty() {
        actions.push(Action::DeleteRevisions(trimmed));
    }
    actions.push(Action::Status(Box::new(round.status())));

    if round.min_ready > 0 {
        // A ready pod turns available by the clock alone: look again then.
        let now = observed.now;
        let soonest = owned
            .iter()
            .filter_map(|p| available_at(p, round.min_ready))
            .filter(|t| *t >= now)
            .min();
        if let Some(t) = soonest {
            round.wait(secs(t.duration_since(now)) + Duration::from_secs(1));
        }
    }
    if let Some(d) = round.requeue {
        actions.push(Action::Requeue(d));
    }
    actions
}

// ---------------------------------------------------------------------------------------
// The driver.

/// Registers the controller's hooks and returns its workers (2, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    DaemonSetController::watch(&ctx.caches, &queue);
    let controller = DaemonSetController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("daemonset-controller"),
    );
    ctx.workers(controller, queue, 2)
}

/// The backoff of deleting finished pods on one node for one DaemonSet.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
    last: jiff::Timestamp,
}

/// The controller: caches in, API calls out.
pub struct DaemonSetController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    events: Arc<Recorder>,
    settle: Duration,
    /// Keyed by DaemonSet uid and node name.
    backoff: Mutex<HashMap<(String, String), Backoff>>,
}

/// What of a node decides where daemon pods run (a heartbeat changes none of it).
type NodeShape = (Option<BTreeMap<String, String>>, Option<Vec<Taint>>);

fn node_shape(node: &Node) -> NodeShape {
    (
        node.metadata.labels.clone(),
        node.spec.as_ref().and_then(|s| s.taints.clone()),
    )
}

fn daemonset_api() -> Kind {
    Kind::of::<DaemonSet>(true)
}

fn revisions_api() -> Kind {
    Kind::of::<ControllerRevision>(true)
}

impl DaemonSetController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(DaemonSetController {
            caches,
            effects,
            clock,
            events,
            settle: SETTLE,
            backoff: Mutex::new(HashMap::new()),
        })
    }

    /// Registers the hooks that fill `queue`: DaemonSets, their pods (and orphans they
    /// select), their revisions, and nodes that come, go or change labels or taints.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        caches
            .daemonsets
            .on_change(Box::new(move |ds: &DaemonSet, _| {
                q.add(Key::of(&ds.metadata))
            }));

        let (q, sets) = (queue.clone(), caches.daemonsets.clone());
        caches.pods.on_change(Box::new(move |pod: &Pod, _| {
            driver::queue_controller(&q, &sets, "apps", "DaemonSet", &pod.metadata, |ds| {
                LabelMatcher::new(Some(&ds.spec.selector)).matches(pod.metadata.labels.as_ref())
            });
        }));

        let (q, sets) = (queue.clone(), caches.daemonsets.clone());
        caches
            .controllerrevisions
            .on_change(Box::new(move |r: &ControllerRevision, _| {
                driver::queue_controller(&q, &sets, "apps", "DaemonSet", &r.metadata, |ds| {
                    LabelMatcher::new(Some(&ds.spec.selector)).matches(r.metadata.labels.as_ref())
                });
            }));

        let (q, sets) = (queue.clone(), caches.daemonsets.clone());
        let shapes: Mutex<HashMap<String, NodeShape>> = Mutex::new(HashMap::new());
        caches.nodes.on_change(Box::new(move |node: &Node, change| {
            let name = node.name_any();
            let changed = {
                let mut shapes = shapes.lock().unwrap_or_else(|e| e.into_inner());
                match change {
                    driver::Change::Deleted => {
                        shapes.remove(&name);
                        true
                    }
                    driver::Change::Applied => {
                        let shape = node_shape(node);
                        shapes.insert(name, shape.clone()) != Some(shape)
                    }
                }
            };
            if changed {
                for ds in sets.store().state() {
                    q.add(Key::of(&ds.metadata));
                }
            }
        }));
    }

    fn backoff_view(&self, uid: &str, now: jiff::Timestamp) -> HashMap<String, jiff::Timestamp> {
        let mut all = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let forget = jiff::SignedDuration::try_from(FAILED_BACKOFF_MAX * 2).unwrap_or_default();
        all.retain(|_, b| b.last + forget > now);
        all.iter()
            .filter(|((u, _), _)| u == uid)
            .map(|((_, node), b)| {
                let delay = jiff::SignedDuration::try_from(b.delay).unwrap_or_default();
                (node.clone(), b.last + delay)
            })
            .collect()
    }

    fn bump_backoff(&self, uid: &str, node: &str, now: jiff::Timestamp) {
        let mut all = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let entry = all
            .entry((uid.to_string(), node.to_string()))
            .or_insert(Backoff {
                delay: Duration::ZERO,
                last: now,
            });
        entry.delay = if entry.delay.is_zero() {
            FAILED_BACKOFF_INITIAL
        } else {
            (entry.delay * 2).min(FAILED_BACKOFF_MAX)
        };
        entry.last = now;
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let Some(ds) = self.caches.daemonsets.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        let nodes = self.caches.nodes.store().state();
        let pods = self.caches.pods.in_namespace(&key.namespace);
        let revisions = self.caches.controllerrevisions.in_namespace(&key.namespace);
        let now = self.clock.now();
        let backoff = self.backoff_view(ds.metadata.uid.as_deref().unwrap_or(""), now);
        let actions = reconcile(
            &ds,
            &Observed {
                nodes: &nodes,
                pods: &pods,
                revisions: &revisions,
                backoff: &backoff,
                now,
            },
        );
        self.apply(&ds, actions, now).await
    }

    /// Carries out `actions` in order. A create or delete that fails still lets the
    /// status be written, and the sync is retried a little later.
    pub async fn apply(
        &self,
        ds: &DaemonSet,
        actions: Vec<Action>,
        now: jiff::Timestamp,
    ) -> driver::Result<Next> {
        let ns = ds.namespace().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let me = reference(ds);
        let mut next = Next::Done;
        let mut failed = false;
        for action in actions {
            match action {
                Action::PatchPod { pod, patch } => {
                    let kind = Kind::pods();
                    match self.effects.merge_patch(&kind, &ns, &pod, patch).await {
                        Ok(_) => {}
                        // Gone or changed meanwhile: its event brings us back.
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(e) => return Err(driver::api_error("patch", &kind, &ns, &pod)(e)),
                    }
                }
                Action::PatchRevision { name, patch } => {
                    let kind = revisions_api();
                    match self.effects.merge_patch(&kind, &ns, &name, patch).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(e) => return Err(driver::api_error("patch", &kind, &ns, &name)(e)),
                    }
                }
                Action::CreateRevision(rev) => {
                    if let Some(next) = self.create_revision(ds, &rev).await? {
                        return Ok(next);
                    }
                }
                Action::Create { template, nodes } => {
                    if self.create(ds, &template, &nodes).await.is_err() {
                        failed = true;
                    }
                }
                Action::Delete(victims) => {
                    if self.delete(ds, &victims).await.is_err() {
                        failed = true;
                    }
                }
                Action::Event {
                    type_,
                    reason,
                    message,
                } => self.events.record(&me, type_, reason, &message).await,
                Action::Backoff(node) => self.bump_backoff(&uid, &node, now),
                Action::DeleteRevisions(gone) => {
                    let kind = revisions_api();
                    let results =
                        join_all(gone.iter().map(|(name, uid)| {
                            self.effects.delete(&kind, &ns, name, Some(uid), None)
                        }))
                        .await;
                    for ((name, _), r) in gone.iter().zip(results) {
                        match r {
                            Ok(()) | Err(kube::Error::Api(_)) => {}
                            Err(e) => return Err(driver::api_error("delete", &kind, &ns, name)(e)),
                        }
                    }
                }
                Action::Status(status) => {
                    if status_differs(ds.status.as_ref(), &status) {
                        self.write_status(ds, *status).await?;
                    }
                }
                Action::Requeue(d) => next = next.min(Next::After(d)),
            }
        }
        if failed {
            return Ok(next.min(Next::After(Duration::from_secs(5))));
        }
        Ok(next)
    }

    /// Creates the current revision. `Some(next)` ends the sync: the name was taken by
    /// another template (a hash collision, counted in the status so the next hash
    /// differs) or the create failed.
    async fn create_revision(
        &self,
        ds: &DaemonSet,
        rev: &ControllerRevision,
    ) -> driver::Result<Option<Next>> {
        let ns = ds.namespace().unwrap_or_default();
        let kind = revisions_api();
        let name = rev.name_any();
        let body = serde_json::to_value(rev)
            .map_err(|e| driver::Error::Encode("ControllerRevision".into(), e))?;
        match self.effects.create(&kind, &ns, body).await {
            Ok(_) => {
                self.caches
                    .controllerrevisions
                    .wait_for(|c| c.get(&ns, &name).is_some(), self.settle)
                    .await;
                Ok(None)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = self
                    .effects
                    .get(&kind, &ns, &name)
                    .await
                    .map_err(driver::api_error("get", &kind, &ns, &name))?;
                let same = existing
                    .as_ref()
                    .and_then(|v| v.get("data"))
                    .is_some_and(|d| *d == rev.data.0);
                if same {
                    // Ours, made by an earlier sync: the cache will show it.
                    return Ok(Some(Next::After(Duration::from_millis(100))));
                }
                let mut body = ds.clone();
                let status = body.status.get_or_insert_with(Default::default);
                status.collision_count =
                    Some(status.collision_count.unwrap_or(0).saturating_add(1));
                tracing::info!(daemonset = %ds.name_any(), namespace = %ns, revision = %name,
                    "hash collision of a DaemonSet's revision; counting it");
                let body = serde_json::to_value(&body)
                    .map_err(|e| driver::Error::Encode("DaemonSet".into(), e))?;
                match self
                    .effects
                    .replace_status(&daemonset_api(), &ns, &ds.name_any(), body)
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {
                        Ok(Some(Next::After(Duration::from_millis(100))))
                    }
                    Err(e) => Err(driver::api_error(
                        "update status of",
                        &daemonset_api(),
                        &ns,
                        &ds.name_any(),
                    )(e)),
                }
            }
            Err(e) => Err(driver::api_error("create", &kind, &ns, &name)(e)),
        }
    }

    async fn write_status(&self, ds: &DaemonSet, status: DaemonSetStatus) -> driver::Result<()> {
        let ns = ds.namespace().unwrap_or_default();
        let kind = daemonset_api();
        let mut body = ds.clone();
        body.status = Some(status);
        let body = serde_json::to_value(&body)
            .map_err(|e| driver::Error::Encode("DaemonSet".into(), e))?;
        match self
            .effects
            .replace_status(&kind, &ns, &ds.name_any(), body)
            .await
        {
            Ok(_) => Ok(()),
            // A newer DaemonSet is on its way through the watch, and will bring us back.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(driver::api_error(
                "update status of",
                &kind,
                &ns,
                &ds.name_any(),
            )(e)),
        }
    }

    /// Creates one pod per node in batches of 1, 2, 4, …, stopping at the first failure.
    async fn create(
        &self,
        ds: &DaemonSet,
        template: &PodTemplateSpec,
        nodes: &[String],
    ) -> Result<(), String> {
        let ns = ds.namespace().unwrap_or_default();
        let kind = Kind::pods();
        let me = reference(ds);
        let mut made: Vec<String> = Vec::new();
        let mut failed = None;
        let (mut pos, mut batch) = (0usize, 1usize);
        while pos < nodes.len() && failed.is_none() {
            let chunk = &nodes[pos..(pos + batch).min(nodes.len())];
            let results = join_all(chunk.iter().map(|n| {
                self.effects
                    .create(&kind, &ns, pod_for_node(ds, template, n))
            }))
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
                    // The namespace is going away: so are we.
                    Err(kube::Error::Api(s)) if terminating(&s) => {}
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
            pos += chunk.len();
            batch *= 2;
        }
        self.caches
            .pods
            .wait_for(
                |c| made.iter().all(|n| c.get(&ns, n).is_some()),
                self.settle,
            )
            .await;
        failed.map_or(Ok(()), Err)
    }

    async fn delete(&self, ds: &DaemonSet, victims: &[(String, String)]) -> Result<(), String> {
        let ns = ds.namespace().unwrap_or_default();
        let kind = Kind::pods();
        let me = reference(ds);
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
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
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
        let gone: BTreeSet<(&str, &str)> = victims
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        self.caches
            .pods
            .wait_for(
                |c| {
                    gone.iter().all(|(n, u)| {
                        c.get(&ns, n)
                            .is_none_or(|p| deleting(&p) || p.metadata.uid.as_deref() != Some(u))
                    })
                },
                self.settle,
            )
            .await;
        failed.map_or(Ok(()), Err)
    }
}

/// Whether a refusal says the namespace is being deleted.
fn terminating(s: &kube::core::Status) -> bool {
    s.details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

impl Reconciler for DaemonSetController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "daemonset"
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
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{
        Container, NodeSpec, PodCondition, PodStatus, PreferredSchedulingTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::runtime::watcher;

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

    fn strategy(surge: i32, unavailable: i32) -> Option<DaemonSetUpdateStrategy> {
        Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_surge: Some(IntOrString::Int(surge)),
                max_unavailable: Some(IntOrString::Int(unavailable)),
            }),
        })
    }

    fn daemonset(image: &str) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("ds-uid".into()),
                generation: Some(1),
                resource_version: Some("5".into()),
                ..Default::default()
            },
            spec: DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: labels(&[("app", "agent")]),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "agent")]),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "agent".into(),
                            image: Some(image.into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                update_strategy: strategy(0, 1),
                revision_history_limit: Some(10),
                min_ready_seconds: None,
            },
            status: None,
        }
    }

    fn node(name: &str, l: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(l),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then(|| {
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn nodes(names: &[&str]) -> Vec<Arc<Node>> {
        names.iter().map(|n| Arc::new(node(n, &[], &[]))).collect()
    }

    fn owner(uid: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "agent".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }])
    }

    /// A pod of the DaemonSet on `node` with revision hash `hash`, ready since `ready`.
    fn pod(name: &str, node: &str, hash: &str, phase: &str, ready: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("u-{name}")),
                labels: labels(&[("app", "agent"), (HASH_LABEL, hash)]),
                owner_references: owner("ds-uid"),
                creation_timestamp: Some(Time(t(0))),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
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
        }
    }

    /// The current revision of `ds` and its hash.
    fn current(ds: &DaemonSet, number: i64) -> (ControllerRevision, String) {
        let hash = template_hash(&ds.spec.template, None);
        let mut r = snapshot(ds, &hash, number);
        r.metadata.uid = Some(format!("cr-{hash}"));
        (r, hash)
    }

    fn decide(
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        pods: &[Pod],
        revs: &[ControllerRevision],
    ) -> Vec<Action> {
        let pods: Vec<Arc<Pod>> = pods.iter().cloned().map(Arc::new).collect();
        let revs: Vec<Arc<ControllerRevision>> = revs.iter().cloned().map(Arc::new).collect();
        reconcile(
            ds,
            &Observed {
                nodes,
                pods: &pods,
                revisions: &revs,
                backoff: &HashMap::new(),
                now: t(100),
            },
        )
    }

    fn created(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Create { nodes, .. } => Some(nodes.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn deleted(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Delete(v) => Some(v.iter().map(|(n, _)| n.clone()).collect()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn status(actions: &[Action]) -> DaemonSetStatus {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Status(s) => Some((**s).clone()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let ds = daemonset("v1");
        let spec = pod_template(&ds, "h", None).spec.unwrap();
        let plain = node("a", &[], &[]);
        assert_eq!(node_should_run(&spec, &plain), (true, true));
        // NoSchedule keeps new pods off but lets a running one stay; NoExecute does not.
        let soft = node("b", &[], &[("dedicated", "NoSchedule")]);
        assert_eq!(node_should_run(&spec, &soft), (false, true));
        let hard = node("c", &[], &[("dedicated", "NoExecute")]);
        assert_eq!(node_should_run(&spec, &hard), (false, false));
        let prefer = node("d", &[], &[("dedicated", "PreferNoSchedule")]);
        assert_eq!(node_should_run(&spec, &prefer), (true, true));
        // The daemon tolerations: cordoned, not ready, unreachable, under pressure.
        let troubled = node(
            "e",
            &[],
            &[
                (UNSCHEDULABLE, "NoSchedule"),
                (NOT_READY, "NoExecute"),
                (UNREACHABLE, "NoExecute"),
                (DISK_PRESSURE, "NoSchedule"),
                (MEMORY_PRESSURE, "NoSchedule"),
                (PID_PRESSURE, "NoSchedule"),
            ],
        );
        assert_eq!(node_should_run(&spec, &troubled), (true, true));
        // not-ready NoSchedule is not among them (upstream keeps new pods off it too).
        let not_ready = node("f", &[], &[(NOT_READY, "NoSchedule")]);
        assert_eq!(node_should_run(&spec, &not_ready), (false, true));
        // A toleration in the template.
        let mut tolerant = ds.clone();
        tolerant.spec.template.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        let spec2 = pod_template(&tolerant, "h", None).spec.unwrap();
        assert_eq!(node_should_run(&spec2, &hard), (true, true));

        // nodeSelector and required node affinity.
        let mut picky = ds.clone();
        let ps = picky.spec.template.spec.as_mut().unwrap();
        ps.node_selector = labels(&[("disk", "ssd")]);
        ps.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "zone".into(),
                            operator: "In".into(),
                            values: Some(vec!["z1".into(), "z2".into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 1,
                        preference: NodeSelectorTerm::default(),
                    },
                ]),
            }),
            ..Default::default()
        });
        let spec3 = pod_template(&picky, "h", None).spec.unwrap();
        let fits = node("g", &[("disk", "ssd"), ("zone", "z2")], &[]);
        let wrong_zone = node("h", &[("disk", "ssd"), ("zone", "z3")], &[]);
        let no_disk = node("i", &[("zone", "z1")], &[]);
        assert_eq!(node_should_run(&spec3, &fits), (true, true));
        assert_eq!(node_should_run(&spec3, &wrong_zone), (false, false));
        assert_eq!(node_should_run(&spec3, &no_disk), (false, false));
        // A template naming a node.
        let mut named = ds.clone();
        named.spec.template.spec.as_mut().unwrap().node_name = Some("a".into());
        let spec4 = pod_template(&named, "h", None).spec.unwrap();
        assert_eq!(node_should_run(&spec4, &plain), (true, true));
        assert_eq!(node_should_run(&spec4, &soft), (false, false));

        // Over the whole decision: only eligible nodes get pods, misplaced ones are
        // counted and (under NoExecute) removed.
        let all = vec![Arc::new(plain), Arc::new(soft), Arc::new(hard)];
        let (rev, hash) = current(&ds, 1);
        let pods = [
            pod("on-b", "b", &hash, "Running", Some(0)),
            pod("on-c", "c", &hash, "Running", Some(0)),
        ];
        let a = decide(&ds, &all, &pods, &[rev]);
        assert_eq!(created(&a), ["a"]);
        assert_eq!(deleted(&a), ["on-c"]);
        let s = status(&a);
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.number_misscheduled
            ),
            (1, 0, 2)
        );
    }

    #[test]
    fn creates_a_revision_and_one_pinned_pod_per_node() {
        let mut ds = daemonset("v1");
        ds.metadata.annotations = Some(
            [(TEMPLATE_GENERATION.to_string(), "3".to_string())]
                .into_iter()
                .collect(),
        );
        let a = decide(&ds, &nodes(&["n1", "n2"]), &[], &[]);
        let Action::CreateRevision(rev) = &a[0] else {
            panic!("{a:?}")
        };
        let hash = template_hash(&ds.spec.template, None);
        assert_eq!(
            rev.metadata.name.as_deref(),
            Some(format!("agent-{hash}").as_str())
        );
        assert_eq!(rev.revision, Some(1));
        assert_eq!(label(&rev.metadata, HASH_LABEL), Some(hash.as_str()));
        assert_eq!(label(&rev.metadata, "app"), Some("agent"));
        assert_eq!(rev.data.0["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            rev.data.0["spec"]["template"]["spec"]["containers"][0]["image"],
            "v1"
        );
        assert_eq!(controller_of(&rev.metadata).unwrap().uid, "ds-uid");
        assert_eq!(created(&a), ["n1", "n2"]);
        let Some(Action::Create { template, .. }) =
            a.iter().find(|a| matches!(a, Action::Create { .. }))
        else {
            panic!()
        };
        let p = pod_for_node(&ds, template, "n2");
        assert_eq!(p["metadata"]["generateName"], "agent-");
        assert_eq!(p["metadata"]["labels"][HASH_LABEL], hash.as_str());
        assert_eq!(p["metadata"]["labels"][GENERATION_LABEL], "3");
        assert_eq!(p["metadata"]["labels"]["app"], "agent");
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                &r["kind"],
                &r["uid"],
                &r["controller"],
                &r["blockOwnerDeletion"]
            ),
            (
                &json!("DaemonSet"),
                &json!("ds-uid"),
                &json!(true),
                &json!(true)
            )
        );
        assert_eq!(p["spec"].get("nodeName"), None);
        assert_eq!(
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            json!({"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]})
        );
        let tolerations: Vec<(String, String)> = p["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap().to_string(),
                    t["effect"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            tolerations,
            [
                (NOT_READY, "NoExecute"),
                (UNREACHABLE, "NoExecute"),
                (DISK_PRESSURE, "NoSchedule"),
                (MEMORY_PRESSURE, "NoSchedule"),
                (PID_PRESSURE, "NoSchedule"),
                (UNSCHEDULABLE, "NoSchedule"),
            ]
            .map(|(k, e)| (k.to_string(), e.to_string()))
        );
        let s = status(&a);
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.observed_generation
            ),
            (2, 0, Some(1))
        );
        assert_eq!(s.number_unavailable, Some(2));
        // Without the annotation, the generation label carries the revision number.
        let a = decide(&daemonset("v1"), &nodes(&["n1"]), &[], &[]);
        let Some(Action::Create { template, .. }) =
            a.iter().find(|a| matches!(a, Action::Create { .. }))
        else {
            panic!()
        };
        assert_eq!(
            label(template.metadata.as_ref().unwrap(), GENERATION_LABEL),
            Some("1")
        );
    }

    #[test]
    fn daemon_tolerations_replace_matching_ones_and_cover_host_network() {
        let mut spec = PodSpec {
            host_network: Some(true),
            tolerations: Some(vec![
                Toleration {
                    key: Some(NOT_READY.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(300),
                    ..Default::default()
                },
                Toleration {
                    key: Some("mine".into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        add_daemon_tolerations(&mut spec);
        let tols = spec.tolerations.unwrap();
        assert_eq!(tols.len(), 8);
        assert_eq!(tols[0].key.as_deref(), Some(NOT_READY));
        assert_eq!(tols[0].toleration_seconds, None);
        assert_eq!(tols[1].key.as_deref(), Some("mine"));
        assert_eq!(tols[7].key.as_deref(), Some(NETWORK_UNAVAILABLE));
    }

    #[test]
    fn pods_go_when_their_node_leaves_or_stops_qualifying() {
        let ds = daemonset("v1");
        let (rev, hash) = current(&ds, 1);
        let pods = [
            pod("p1", "n1", &hash, "Running", Some(0)),
            pod("p2", "n2", &hash, "Running", Some(0)),
            pod("p3", "gone", &hash, "Running", Some(0)),
        ];
        // "gone" was deleted: its pod goes; the others stay.
        let a = decide(
            &ds,
            &nodes(&["n1", "n2"]),
            &pods,
            std::slice::from_ref(&rev),
        );
        assert_eq!(deleted(&a), ["p3"]);
        assert!(created(&a).is_empty());
        let s = status(&a);
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.number_ready
            ),
            (2, 2, 2)
        );
        assert_eq!(s.number_available, Some(2));
        assert_eq!(s.updated_number_scheduled, Some(2));
        assert_eq!(s.number_unavailable, None);
        // An unscheduled pod pinned to a node that is gone goes too.
        let mut pinned = pod("p4", "", &hash, "Pending", None);
        pinned.spec.as_mut().unwrap().node_name = None;
        pinned.spec.as_mut().unwrap().affinity = Some(pin_to_node(None, "gone"));
        assert_eq!(target_node(&pinned).as_deref(), Some("gone"));
        let a = decide(
            &ds,
            &nodes(&["n1", "n2"]),
            &[pods[0].clone(), pods[1].clone(), pinned],
            std::slice::from_ref(&rev),
        );
        assert_eq!(deleted(&a), ["p4"]);
        // A node that no longer matches the nodeSelector loses its pod.
        let mut picky = ds.clone();
        picky.spec.template.spec.as_mut().unwrap().node_selector = labels(&[("role", "edge")]);
        let (prev, phash) = current(&picky, 1);
        let pods = [
            pod("p1", "n1", &phash, "Running", Some(0)),
            pod("p2", "n2", &phash, "Running", Some(0)),
        ];
        let ns = vec![
            Arc::new(node("n1", &[("role", "edge")], &[])),
            Arc::new(node("n2", &[], &[])),
        ];
        let a = decide(&picky, &ns, &pods, &[prev]);
        assert_eq!(deleted(&a), ["p2"]);
        assert_eq!(status(&a).number_misscheduled, 1);
        // A pod being deleted holds its node until it is gone; a new node gets a pod.
        let mut leaving = pod("p1", "n1", &hash, "Running", Some(0));
        leaving.metadata.deletion_timestamp = Some(Time(t(50)));
        let a = decide(&ds, &nodes(&["n1", "n3"]), &[leaving], &[rev]);
        assert_eq!(created(&a), ["n3"]);
        assert!(deleted(&a).is_empty());
    }

    #[test]
    fn finished_pods_are_replaced_with_backoff() {
        let ds = daemonset("v1");
        let (rev, hash) = current(&ds, 1);
        let failed = pod("p1", "n1", &hash, "Failed", None);
        let done = pod("p2", "n2", &hash, "Succeeded", None);
        let a = decide(
            &ds,
            &nodes(&["n1", "n2"]),
            &[failed.clone(), done],
            std::slice::from_ref(&rev),
        );
        assert_eq!(deleted(&a), ["p1", "p2"]);
        assert!(a.contains(&Action::Backoff("n1".into())));
        assert!(a.iter().any(
            |a| matches!(a, Action::Event { reason: "FailedDaemonPod", message, .. }
            if message == "Found failed daemon pod default/p1 on node n1, will try to kill it")
        ));
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Event {
                reason: "SucceededDaemonPod",
                ..
            }
        )));
        // In backoff: left alone, looked at again when it ends.
        let pods = vec![Arc::new(failed.clone())];
        let revs = vec![Arc::new(rev.clone())];
        let backoff: HashMap<String, jiff::Timestamp> = [("n1".to_string(), t(104))].into();
        let a = reconcile(
            &ds,
            &Observed {
                nodes: &nodes(&["n1"]),
                pods: &pods,
                revisions: &revs,
                backoff: &backoff,
                now: t(100),
            },
        );
        assert!(deleted(&a).is_empty());
        assert!(a.contains(&Action::Requeue(Duration::from_secs(4))));
        // Once deleted (finished and being deleted), the node gets a new pod at once.
        let mut going = failed;
        going.metadata.deletion_timestamp = Some(Time(t(99)));
        let a = decide(&ds, &nodes(&["n1"]), &[going], &[rev]);
        assert_eq!(created(&a), ["n1"]);
    }

    #[test]
    fn extra_pods_on_a_node_are_removed_keeping_the_oldest_and_orphans_are_adopted() {
        let ds = daemonset("v1");
        let (rev, hash) = current(&ds, 1);
        let mut older = pod("older", "n1", &hash, "Running", Some(0));
        older.metadata.creation_timestamp = Some(Time(t(-10)));
        older.metadata.owner_references = None;
        let newer = pod("newer", "n1", &hash, "Running", Some(0));
        let a = decide(&ds, &nodes(&["n1"]), &[newer, older], &[rev]);
        assert!(matches!(&a[0], Action::PatchPod { pod, patch }
            if pod == "older" && patch["metadata"]["ownerReferences"][0]["uid"] == "ds-uid"));
        assert_eq!(deleted(&a), ["newer"]);
    }

    /// A toy cluster: the scheduler binds created pods at once, the kubelet makes them
    /// ready when the world settles, deletions take effect at once.
    struct World {
        ds: DaemonSet,
        nodes: Vec<Arc<Node>>,
        pods: Vec<Pod>,
        revisions: Vec<ControllerRevision>,
        now: i64,
        made: usize,
    }

    impl World {
        fn new(ds: DaemonSet, n: usize) -> World {
            let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            World {
                ds,
                nodes: nodes(&refs),
                pods: Vec::new(),
                revisions: Vec::new(),
                now: 100,
                made: 0,
            }
        }

        fn step(&mut self) -> Vec<Action> {
            let pods: Vec<Arc<Pod>> = self.pods.iter().cloned().map(Arc::new).collect();
            let revs: Vec<Arc<ControllerRevision>> =
                self.revisions.iter().cloned().map(Arc::new).collect();
            let actions = reconcile(
                &self.ds,
                &Observed {
                    nodes: &self.nodes,
                    pods: &pods,
                    revisions: &revs,
                    backoff: &HashMap::new(),
                    now: t(self.now),
                },
            );
            for a in &actions {
                match a.clone() {
                    Action::CreateRevision(r) => {
                        let mut r = *r;
                        r.metadata.uid = Some(format!("cr-{}", r.name_any()));
                        self.revisions.push(r);
                    }
                    Action::PatchRevision { name, patch } => {
                        let r = self
                            .revisions
                            .iter_mut()
                            .find(|r| r.name_any() == name)
                            .unwrap();
                        if let Some(n) = patch["revision"].as_i64() {
                            r.revision = Some(n);
                        }
                    }
                    Action::DeleteRevisions(gone) => self
                        .revisions
                        .retain(|r| !gone.iter().any(|(n, _)| *n == r.name_any())),
                    Action::Create { template, nodes } => {
                        for n in nodes {
                            let mut p: Pod =
                                serde_json::from_value(pod_for_node(&self.ds, &template, &n))
                                    .unwrap();
                            self.made += 1;
                            p.metadata.name = Some(format!("agent-{}", self.made));
                            p.metadata.uid = Some(format!("u{}", self.made));
                            p.metadata.creation_timestamp = Some(Time(t(self.now)));
                            p.spec.as_mut().unwrap().node_name = Some(n);
                            p.status = Some(PodStatus {
                                phase: Some("Pending".into()),
                                ..Default::default()
                            });
                            self.pods.push(p);
                        }
                    }
                    Action::Delete(v) => self
                        .pods
                        .retain(|p| !v.iter().any(|(n, _)| *n == p.name_any())),
                    Action::Status(s) => self.ds.status = Some(*s),
                    _ => {}
                }
            }
            actions
        }

        /// Pending pods start and turn ready.
        fn settle(&mut self) {
            self.now += 60;
            for p in &mut self.pods {
                let st = p.status.as_mut().unwrap();
                if st.phase.as_deref() == Some("Pending") {
                    st.phase = Some("Running".into());
                    st.conditions = Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(t(self.now))),
                        ..Default::default()
                    }]);
                }
            }
            self.now += 60;
        }

        /// Nodes without an available pod.
        fn unavailable(&self) -> usize {
            self.nodes
                .iter()
                .filter(|n| {
                    !self.pods.iter().any(|p| {
                        target_node(p) == n.metadata.name && is_available(p, 0, t(self.now))
                    })
                })
                .count()
        }

        fn images(&self) -> BTreeSet<String> {
            self.pods
                .iter()
                .map(|p| {
                    p.spec.as_ref().unwrap().containers[0]
                        .image
                        .clone()
                        .unwrap()
                })
                .collect()
        }

        /// Runs until the status says the rollout is done, checking `each` on the way.
        fn converge(&mut self, each: impl Fn(&World)) {
            for _ in 0..60 {
                self.step();
                each(self);
                let s = self.ds.status.clone().unwrap_or_default();
                let n = i32::try_from(self.nodes.len()).unwrap();
                if s.updated_number_scheduled == Some(n)
                    && s.number_available == Some(n)
                    && s.observed_generation == self.ds.metadata.generation
                {
                    return;
                }
                self.settle();
                each(self);
            }
            panic!("did not converge: {:#?}", self.ds.status);
        }

        fn set_image(&mut self, image: &str) {
            self.ds.spec.template.spec.as_mut().unwrap().containers[0].image = Some(image.into());
            self.ds.metadata.generation = self.ds.metadata.generation.map(|g| g + 1);
        }
    }

    #[test]
    fn rolling_update_stays_within_max_unavailable() {
        for (n, unavailable) in [(5, 1), (5, 2), (4, 4)] {
            let mut ds = daemonset("v1");
            ds.spec.update_strategy = strategy(0, unavailable);
            let mut w = World::new(ds, n);
            w.converge(|_| {});
            assert_eq!(w.images(), ["v1".to_string()].into());
            w.set_image("v2");
            let most = usize::try_from(unavailable).unwrap();
            w.converge(|w| {
                assert!(
                    w.unavailable() <= most,
                    "{} unavailable, at most {most} allowed: {:?}",
                    w.unavailable(),
                    w.pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
                )
            });
            assert_eq!(w.images(), ["v2".to_string()].into());
            assert_eq!(w.pods.len(), n);
            assert_eq!(w.revisions.len(), 2);
            let s = w.ds.status.clone().unwrap();
            assert_eq!(
                (s.desired_number_scheduled, s.number_ready),
                (n as i32, n as i32)
            );
        }
    }

    #[test]
    fn a_percentage_rounds_up_and_on_delete_waits_for_the_user() {
        let mut ds = daemonset("v1");
        ds.spec.update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_surge: Some(IntOrString::Int(0)),
                max_unavailable: Some(IntOrString::String("30%".into())),
            }),
        });
        assert_eq!(fenceposts(&ds, 5), (0, 2));
        ds.spec.update_strategy = strategy(0, 0);
        assert_eq!(fenceposts(&ds, 5), (0, 1));

        let mut ds = daemonset("v1");
        ds.spec.update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
        let mut w = World::new(ds, 3);
        w.converge(|_| {});
        w.set_image("v2");
        for _ in 0..3 {
            w.step();
            w.settle();
        }
        assert_eq!(w.images(), ["v1".to_string()].into());
        assert_eq!(w.ds.status.clone().unwrap().updated_number_scheduled, None);
        // The user deletes one: its replacement has the new template.
        let gone = w.pods.remove(0).name_any();
        w.step();
        w.settle();
        assert!(!w.pods.iter().any(|p| p.name_any() == gone));
        assert_eq!(w.images().len(), 2);
        assert_eq!(w.ds.status.clone().unwrap().updated_number_scheduled, None);
        w.step();
        assert_eq!(
            w.ds.status.clone().unwrap().updated_number_scheduled,
            Some(1)
        );
    }

    #[test]
    fn surge_keeps_every_node_available() {
        let mut ds = daemonset("v1");
        ds.spec.update_strategy = strategy(2, 0);
        let mut w = World::new(ds, 5);
        w.converge(|_| {});
        w.set_image("v2");
        w.converge(|w| {
            assert_eq!(w.unavailable(), 0);
            assert!(w.pods.len() <= 7, "{}", w.pods.len());
        });
        assert_eq!(w.images(), ["v2".to_string()].into());
        assert_eq!(w.pods.len(), 5);
    }

    #[test]
    fn revisions_are_reused_renumbered_and_trimmed() {
        let mut ds = daemonset("v1");
        ds.spec.revision_history_limit = Some(1);
        let mut w = World::new(ds, 2);
        w.converge(|_| {});
        w.set_image("v2");
        w.converge(|_| {});
        w.set_image("v3");
        w.converge(|_| {});
        // v1 was trimmed (no pod carries its hash); v2 is kept as history.
        let mut revs: Vec<(i64, String)> = w
            .revisions
            .iter()
            .map(|r| {
                (
                    r.revision.unwrap(),
                    r.data.0["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        revs.sort();
        assert_eq!(revs, [(2, "v2".to_string()), (3, "v3".to_string())]);
        // Back to v2: its revision is reused with the next number.
        w.set_image("v2");
        w.converge(|_| {});
        let mut revs: Vec<(i64, String)> = w
            .revisions
            .iter()
            .map(|r| {
                (
                    r.revision.unwrap(),
                    r.data.0["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        revs.sort();
        assert_eq!(revs, [(3, "v3".to_string()), (4, "v2".to_string())]);
        // A revision whose hash live pods carry is not trimmed.
        let ds = w.ds.clone();
        let old: Vec<&ControllerRevision> = w
            .revisions
            .iter()
            .filter(|r| r.revision == Some(3))
            .collect();
        let live = pod("x", "n0", &revision_hash(old[0]), "Running", None);
        let mut tight = ds.clone();
        tight.spec.revision_history_limit = Some(0);
        assert!(cleanup_history(&tight, old.clone(), &[&live]).is_empty());
        assert_eq!(cleanup_history(&tight, old, &[]).len(), 1);
    }

    #[test]
    fn status_counts_availability_after_min_ready_seconds() {
        let mut ds = daemonset("v1");
        ds.spec.min_ready_seconds = Some(30);
        ds.metadata.generation = Some(4);
        let (rev, hash) = current(&ds, 1);
        let pods = [
            pod("a", "n1", &hash, "Running", Some(0)),
            pod("b", "n2", &hash, "Running", Some(90)),
            pod("c", "n3", "old", "Running", None),
        ];
        let a = decide(&ds, &nodes(&["n1", "n2", "n3", "n4"]), &pods, &[rev]);
        let s = status(&a);
        assert_eq!(s.desired_number_scheduled, 4);
        assert_eq!(s.current_number_scheduled, 3);
        assert_eq!(s.number_ready, 2);
        assert_eq!(s.number_available, Some(1));
        assert_eq!(s.number_unavailable, Some(3));
        assert_eq!(s.updated_number_scheduled, Some(2));
        assert_eq!(s.observed_generation, Some(4));
        // "b" becomes available at 120: look again just after.
        assert!(
            a.contains(&Action::Requeue(Duration::from_secs(21))),
            "{a:?}"
        );
        assert!(status_differs(None, &s));
        assert!(!status_differs(Some(&s), &s));
        let mut zeros = s.clone();
        zeros.number_available = Some(0);
        let mut missing = s.clone();
        missing.number_available = None;
        assert!(!status_differs(Some(&zeros), &missing));
    }

    #[test]
    fn deleting_or_select_all_daemonsets_do_nothing() {
        let mut ds = daemonset("v1");
        ds.metadata.deletion_timestamp = Some(Time(t(0)));
        assert!(decide(&ds, &nodes(&["n1"]), &[], &[]).is_empty());
        let mut all = daemonset("v1");
        all.spec.selector = LabelSelector::default();
        let a = decide(&all, &nodes(&["n1"]), &[], &[]);
        assert!(matches!(
            &a[..],
            [Action::Event {
                reason: "SelectingAll",
                ..
            }]
        ));
    }

    fn controller(fx: Arc<Recording>) -> (Arc<DaemonSetController>, Arc<Caches>) {
        let caches = Arc::new(Caches::new());
        let clock = Arc::new(FixedClock(Mutex::new(t(0))));
        let events = Arc::new(Recorder::new(
            fx.clone(),
            clock.clone(),
            "daemonset-controller",
        ));
        let mut c = DaemonSetController::new(caches.clone(), fx, clock, events);
        Arc::get_mut(&mut c).unwrap().settle = Duration::from_millis(10);
        (c, caches)
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
    async fn driver_creates_the_revision_and_pods_with_events() {
        let fx = Arc::new(Recording::default());
        let (c, caches) = controller(fx.clone());
        let queue = Queue::new();
        DaemonSetController::watch(&caches, &queue);
        feed(&caches.daemonsets, vec![daemonset("v1")]).await;
        feed(&caches.pods, vec![]).await;
        feed(&caches.controllerrevisions, vec![]).await;
        feed(
            &caches.nodes,
            vec![node("n1", &[], &[]), node("n2", &[], &[])],
        )
        .await;
        let key = queue.next().await;
        assert_eq!(key.name, "agent");
        assert_eq!(c.sync(&key).await.unwrap(), Next::Done);
        let calls = fx.calls();
        let hash = template_hash(&daemonset("v1").spec.template, None);
        assert_eq!(
            calls[0],
            format!("create ControllerRevision default/agent-{hash}")
        );
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("create Pod default/agent-"))
                .count(),
            2,
            "{calls:#?}"
        );
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("create Event default/agent."))
                .count(),
            2,
            "{calls:#?}"
        );
        let status = calls
            .iter()
            .find(|c| c.starts_with("status DaemonSet"))
            .unwrap();
        assert!(status.contains(r#""desiredNumberScheduled":2"#), "{status}");
    }

    #[tokio::test(start_paused = true)]
    async fn driver_deletes_pods_of_a_deleted_node() {
        let fx = Arc::new(Recording::default());
        let (c, caches) = controller(fx.clone());
        let queue = Queue::new();
        DaemonSetController::watch(&caches, &queue);
        let ds = daemonset("v1");
        let (rev, hash) = current(&ds, 1);
        feed(&caches.daemonsets, vec![ds]).await;
        feed(
            &caches.pods,
            vec![
                pod("keep", "n1", &hash, "Running", Some(0)),
                pod("lost", "n2", &hash, "Running", Some(0)),
            ],
        )
        .await;
        feed(&caches.controllerrevisions, vec![rev]).await;
        feed(&caches.nodes, vec![node("n1", &[], &[])]).await;
        let key = queue.next().await;
        c.sync(&key).await.unwrap();
        let calls = fx.calls();
        assert!(
            calls.contains(&"delete Pod default/lost None".to_string()),
            "{calls:#?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("create Pod")),
            "{calls:#?}"
        );
        assert!(
            calls.iter().any(|c| c.starts_with("create Event")),
            "{calls:#?}"
        );
    }
}
