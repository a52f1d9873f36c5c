//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`, each with its own
//! PersistentVolumeClaims `<template>-<set>-<ordinal>` made from the claim templates
//! before the pod; created in ordinal order, each only once its predecessors are Running
//! and Ready (`OrderedReady`), or all at once (`Parallel`); removed from the highest
//! ordinal down; rolled to a new template from the highest ordinal down, one pod at a
//! time, above `rollingUpdate.partition` (or only when deleted, `OnDelete`). Templates
//! are kept as numbered ControllerRevisions `<set>-<hash>`, trimmed to
//! `revisionHistoryLimit`; pods say theirs in `controller-revision-hash`.
//!
//! [`reconcile`] decides from plain values; [`StatefulSetController`] feeds it from the
//! shared caches and carries its [`Action`]s out, with upstream's Events.

use super::driver::{
    self, controller_of, controller_ref, Caches, Clock, Effects, Key, Kind, LabelMatcher, Next,
    Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use super::replicaset::{available_at, is_available, is_ready};
use futures::future::{join_all, BoxFuture};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The label naming a pod after itself, so a Service can select one member.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label holding the name of the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// At most this many pods are created in one batch (upstream's MaxBatchSize).
pub const MAX_BATCH: usize = 500;

/// How long a writer waits for the caches to show its own writes before deciding again.
const SETTLE: Duration = Duration::from_secs(10);
/// Upstream's limit on the part of a revision name before the hash.
const REVISION_PREFIX_MAX: usize = 223;

/// A pod to create, after the claims it needs that do not exist yet.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPod {
    /// The pod.
    pub pod: Pod,
    /// Its missing claims, created first.
    pub claims: Vec<PersistentVolumeClaim>,
}

/// A pod to delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Victim {
    /// Its name.
    pub name: String,
    /// Its uid (the delete's precondition).
    pub uid: String,
    /// An Event to record first (type, reason, message).
    pub note: Option<(EventType, &'static str, String)>,
}

/// One thing a sync does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the ControllerRevision of the current template.
    CreateRevision(Box<ControllerRevision>),
    /// Give an older revision with the current template the next number (a rollback).
    RenumberRevision {
        /// The revision.
        name: String,
        /// Its new number.
        revision: i64,
    },
    /// Make the set the controller of an orphan revision (merge patch).
    AdoptRevision {
        /// The revision.
        name: String,
        /// The merge patch.
        patch: Value,
    },
    /// Make the set the controller of an orphan pod (merge patch).
    Adopt {
        /// The pod.
        pod: String,
        /// The merge patch.
        patch: Value,
    },
    /// Drop the set's reference from a pod that is no longer its member (merge patch).
    Release {
        /// The pod.
        pod: String,
        /// The merge patch.
        patch: Value,
    },
    /// Create these pods (each after its claims), in slow-start batches.
    CreatePods(Vec<NewPod>),
    /// Create the missing claims of a pending pod.
    CreateClaims {
        /// The pod.
        pod: String,
        /// The claims.
        claims: Vec<PersistentVolumeClaim>,
    },
    /// Restore a pod's identity labels (merge patch).
    UpdatePod {
        /// The pod.
        pod: String,
        /// The merge patch.
        patch: Value,
    },
    /// Set a claim's owner references as the retention policy wants (merge patch).
    PatchClaim {
        /// The claim.
        claim: String,
        /// The merge patch.
        patch: Value,
    },
    /// Delete these pods.
    DeletePods(Vec<Victim>),
    /// The status to write (written only if it differs from the current one).
    Status(Box<StatefulSetStatus>),
    /// Delete these revisions (name, uid), beyond the history limit.
    DeleteRevisions(Vec<(String, String)>),
    /// Look again after this long (a pod becomes available by the clock alone).
    Requeue(Duration),
}

/// What a StatefulSet sync sees besides the set itself.
pub struct Observed<'a> {
    /// Every pod in the set's namespace.
    pub pods: &'a [Arc<Pod>],
    /// Every ControllerRevision in the set's namespace.
    pub revisions: &'a [Arc<ControllerRevision>],
    /// Every PersistentVolumeClaim in the set's namespace.
    pub claims: &'a [Arc<PersistentVolumeClaim>],
    /// Now.
    pub now: jiff::Timestamp,
}

/// The name of the set's pod with `ordinal`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The name of the claim from `template` for the set's pod with `ordinal`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The ordinal of `pod` if it is named as a member of `set` (`<set>-<ordinal>`).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = digits.parse().ok()?;
    // Only the canonical spelling: `web-01` is not `web-1`.
    (n.to_string() == digits).then_some(n)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec.replicas.unwrap_or(1).max(0)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether a pod is Running with its Ready condition true.
pub fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

fn running_and_available(pod: &Pod, min_ready: i32, now: jiff::Timestamp) -> bool {
    running_and_ready(pod) && is_available(pod, min_ready, now)
}

fn unavailable(pod: &Pod, min_ready: i32, now: jiff::Timestamp) -> bool {
    !running_and_available(pod, min_ready, now) || is_terminating(pod)
}

fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

fn is_rolling(set: &StatefulSet) -> bool {
    set.spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `rollingUpdate.partition`, when the strategy is RollingUpdate with that field.
fn partition(set: &StatefulSet) -> Option<i32> {
    if !is_rolling(set) {
        return None;
    }
    set.spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0).max(0))
}

/// Whether claims are deleted (instead of retained) when the set is deleted, and when
/// it is scaled down.
fn retention(set: &StatefulSet) -> (bool, bool) {
    let p = set.spec.persistent_volume_claim_retention_policy.as_ref();
    let delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (
        delete(p.and_then(|p| p.when_deleted.as_ref())),
        delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

/// The data a revision records: a strategic merge patch replacing the set's template.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The hash in a revision's name: FNV-1 over its data and the collision count, written
/// with upstream's alphabet of safe characters.
pub fn revision_hash(data: &Value, collisions: i32) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = h.wrapping_mul(0x0100_0193);
            h ^= u32::from(*b);
        }
    };
    eat(serde_json::to_string(data).unwrap_or_default().as_bytes());
    eat(&collisions.to_le_bytes());
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| char::from(SAFE[usize::from(d) % SAFE.len()]))
        .collect()
}

fn revision_name(set: &str, hash: &str) -> String {
    let mut prefix = set;
    if prefix.len() > REVISION_PREFIX_MAX {
        let mut cut = REVISION_PREFIX_MAX;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix = &prefix[..cut];
    }
    format!("{prefix}-{hash}")
}

/// The revision recording the set's current template, numbered `number`.
pub fn new_revision(set: &StatefulSet, number: i64, collisions: i32) -> ControllerRevision {
    let data = revision_data(&set.spec.template);
    let name = revision_name(&set.name_any(), &revision_hash(&data, collisions));
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: set
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone()),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        data: RawExtension(data),
        revision: Some(number),
    }
}

/// The template a revision records.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// The claims of the set's pod with `ordinal`, as (template name, claim): the template
/// with the claim's name, the set's namespace, and the selector's labels added.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let name = set.name_any();
    let selector_labels = set.spec.selector.match_labels.clone();
    set.spec
        .volume_claim_templates
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let template = t.metadata.name.clone().unwrap_or_default();
            let mut claim = t.clone();
            claim.metadata.name = Some(claim_name(&template, &name, ordinal));
            claim.metadata.namespace = set.metadata.namespace.clone();
            claim.metadata.labels = match (claim.metadata.labels.take(), &selector_labels) {
                (Some(mut l), Some(s)) => {
                    l.extend(s.clone());
                    Some(l)
                }
                (Some(l), None) => Some(l),
                (None, s) => s.clone(),
            };
            claim.status = None;
            (template, claim)
        })
        .collect()
}

/// The set's pod with `ordinal` from `template`, labelled with `revision`: the template's
/// labels, annotations, finalizers and spec; its identity (name, labels, hostname,
/// subdomain); its claims as volumes; the set as its controller.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let set_name = set.name_any();
    let name = pod_name(&set_name, ordinal);
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set.spec.service_name.clone().filter(|s| !s.is_empty());
    let claims = claims_for(set, ordinal);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, claim)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.name_any(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    let others = spec.volumes.take().unwrap_or_default();
    volumes.extend(
        others
            .into_iter()
            .filter(|v| !claims.iter().any(|(t, _)| *t == v.name)),
    );
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            generate_name: Some(format!("{set_name}-")),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn is_ref_to(r: &OwnerReference, api_version: &str, kind: &str, name: &str) -> bool {
    r.api_version == api_version && r.kind == kind && r.name == name
}

/// Whether an existing claim keeps the set's pod `pod` from being created: it is being
/// deleted, or (claims deleted on scale-down) it still belongs to an earlier pod.
fn claim_is_stale(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &str) -> bool {
    let (_, delete_on_scale) = retention(set);
    claim.metadata.deletion_timestamp.is_some()
        || (delete_on_scale
            && claim
                .owner_references()
                .iter()
                .any(|r| is_ref_to(r, "v1", "Pod", pod)))
}

/// The owner references `claim` of `pod` should have under the set's retention policy
/// (`in_range`: the pod is not being scaled away), or `None` when they already do or
/// the claim must be left alone (a reference to an earlier set or pod of that name).
pub fn claim_refs(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
    in_range: bool,
) -> Option<Vec<OwnerReference>> {
    let set_name = set.name_any();
    let pod_name = pod.name_any();
    let set_uid = set.metadata.uid.as_deref().unwrap_or("");
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or("");
    let is_set = |r: &OwnerReference| is_ref_to(r, "apps/v1", "StatefulSet", &set_name);
    let is_pod = |r: &OwnerReference| is_ref_to(r, "v1", "Pod", &pod_name);
    let refs = claim.owner_references();
    let stale = refs
        .iter()
        .any(|r| (is_set(r) && r.uid != set_uid) || (is_pod(r) && r.uid != pod_uid));
    if stale {
        return None;
    }
    let (delete_on_delete, delete_on_scale) = retention(set);
    let unexpected = (delete_on_delete || delete_on_scale)
        && refs
            .iter()
            .any(|r| !is_set(r) && !is_pod(r) && r.controller == Some(true));
    let mut want: Vec<OwnerReference> = refs
        .iter()
        .filter(|r| !is_set(r) && !is_pod(r))
        .cloned()
        .collect();
    if !unexpected {
        let scaled_away = delete_on_scale && !in_range;
        if scaled_away {
            want.push(controller_ref(pod));
        }
        if delete_on_delete && !scaled_away {
            want.push(controller_ref(set));
        }
    }
    let key = |r: &OwnerReference| (r.uid.clone(), r.name.clone(), r.kind.clone());
    let mut have_sorted = refs.to_vec();
    have_sorted.sort_by_key(key);
    let mut want_sorted = want.clone();
    want_sorted.sort_by_key(key);
    (have_sorted != want_sorted).then_some(want)
}

fn owner_refs_patch(meta: &ObjectMeta, refs: &[OwnerReference]) -> Value {
    json!({"metadata": {
        "resourceVersion": meta.resource_version,
        "ownerReferences": refs,
    }})
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// Replica counts of a set's pods, as upstream's status has them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    replicas: i32,
    ready: i32,
    available: i32,
    current: i32,
    updated: i32,
}

impl Counts {
    fn of(
        pods: &[&Pod],
        min_ready: i32,
        now: jiff::Timestamp,
        current: &str,
        update: &str,
    ) -> Counts {
        let mut c = Counts::default();
        for pod in pods {
            c.replicas += 1;
            if running_and_ready(pod) {
                c.ready += 1;
                if running_and_available(pod, min_ready, now) {
                    c.available += 1;
                }
            }
            if !is_terminating(pod) {
                let rev = revision_of(pod);
                if rev == current {
                    c.current += 1;
                }
                if rev == update {
                    c.updated += 1;
                }
            }
        }
        c
    }
}

/// Whether two statuses say the same (an absent count is zero).
pub fn same_status(a: &StatefulSetStatus, b: &StatefulSetStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    a.replicas == b.replicas
        && n(a.ready_replicas) == n(b.ready_replicas)
        && n(a.available_replicas) == n(b.available_replicas)
        && n(a.current_replicas) == n(b.current_replicas)
        && n(a.updated_replicas) == n(b.updated_replicas)
        && n(a.collision_count) == n(b.collision_count)
        && a.observed_generation == b.observed_generation
        && a.current_revision == b.current_revision
        && a.update_revision == b.update_revision
        && a.conditions == b.conditions
}

/// Decides one sync of `set`.
pub fn reconcile(set: &StatefulSet, observed: &Observed<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    let name = set.name_any();
    let uid = set.metadata.uid.as_deref().unwrap_or("");
    let deleting = set.metadata.deletion_timestamp.is_some();
    let selector = LabelMatcher::new(Some(&set.spec.selector));
    let now = observed.now;
    let min_ready = set.spec.min_ready_seconds.unwrap_or(0);

    // The pods the set owns, adopting and releasing as upstream's claim does.
    let mut owned: Vec<(i32, &Pod)> = Vec::new();
    for pod in observed.pods.iter().map(Arc::as_ref) {
        let ordinal = ordinal_of(&name, &pod.name_any());
        let member = ordinal.filter(|_| selector.matches(pod.metadata.labels.as_ref()));
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => match member {
                Some(o) => owned.push((o, pod)),
                None if !deleting => {
                    let refs: Vec<OwnerReference> = pod
                        .owner_references()
                        .iter()
                        .filter(|o| o.uid != uid)
                        .cloned()
                        .collect();
                    actions.push(Action::Release {
                        pod: pod.name_any(),
                        patch: owner_refs_patch(&pod.metadata, &refs),
                    });
                }
                None => {}
            },
            Some(_) => {}
            None => {
                if let Some(o) = member.filter(|_| !deleting && !is_terminating(pod)) {
                    let mut refs = pod.owner_references().to_vec();
                    refs.push(controller_ref(set));
                    actions.push(Action::Adopt {
                        pod: pod.name_any(),
                        patch: owner_refs_patch(&pod.metadata, &refs),
                    });
                    owned.push((o, pod));
                }
            }
        }
    }
    owned.sort_by_key(|(o, _)| *o);

    // The revisions: ours, and orphans the selector takes.
    let mut revisions: Vec<&ControllerRevision> = Vec::new();
    for rev in observed.revisions.iter().map(Arc::as_ref) {
        match controller_of(&rev.metadata) {
            Some(r) if r.uid == uid => revisions.push(rev),
            Some(_) => {}
            None if !deleting && selector.matches(rev.metadata.labels.as_ref()) => {
                let mut refs = rev.owner_references().to_vec();
                refs.push(controller_ref(set));
                actions.push(Action::AdoptRevision {
                    name: rev.name_any(),
                    patch: owner_refs_patch(&rev.metadata, &refs),
                });
                revisions.push(rev);
            }
            None => {}
        }
    }
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t =
                    |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });

    // The update revision records the set's template; the current one is what the
    // status says, or the update revision when the history starts.
    let collisions = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let data = revision_data(&set.spec.template);
    let next_number = revisions
        .last()
        .map_or(1, |r| r.revision.unwrap_or(0).saturating_add(1));
    let equal = revisions.iter().rev().find(|r| r.data.0 == data);
    let update_name = match equal {
        Some(r) if revisions.last().map(|l| &l.metadata.name) == Some(&r.metadata.name) => {
            r.name_any()
        }
        Some(r) => {
            actions.push(Action::RenumberRevision {
                name: r.name_any(),
                revision: next_number,
            });
            r.name_any()
        }
        None => {
            let cr = new_revision(set, next_number, collisions);
            let n = cr.name_any();
            if !deleting {
                actions.push(Action::CreateRevision(Box::new(cr)));
            }
            n
        }
    };
    let status_current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref());
    let (current_name, current_template) = match revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == status_current)
    {
        Some(r) if r.metadata.name.as_deref() != Some(update_name.as_str()) => (
            r.name_any(),
            template_of(r).unwrap_or_else(|| set.spec.template.clone()),
        ),
        _ => (update_name.clone(), set.spec.template.clone()),
    };

    // Pods in the ordinal range, by index; the others (condemned), highest first.
    let start = start_ordinal(set);
    // Ordinals stay within i32 however the two fields add up.
    let count = replicas(set).min(i32::MAX - start);
    let end = i64::from(start) + i64::from(count);
    let mut slots: Vec<Option<&Pod>> = vec![None; usize::try_from(count).unwrap_or(0)];
    let mut condemned: Vec<(i32, &Pod)> = Vec::new();
    for &(o, pod) in &owned {
        if o >= start && i64::from(o) < end {
            let i = usize::try_from(o - start).unwrap_or(0);
            slots[i] = Some(pod);
        } else {
            condemned.push((o, pod));
        }
    }
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    let all: Vec<&Pod> = owned.iter().map(|(_, p)| *p).collect();
    let counts = Counts::of(&all, min_ready, now, &current_name, &update_name);
    let mut current_replicas = counts.current;

    let first_unhealthy: Option<i32> = slots
        .iter()
        .zip(start..)
        .find(|(p, _)| p.is_none_or(|p| unavailable(p, min_ready, now)))
        .map(|(_, o)| o)
        .or_else(|| {
            condemned
                .iter()
                .rev()
                .find(|(_, p)| unavailable(p, min_ready, now))
                .map(|(o, _)| *o)
        });

    if !deleting {
        let monotonic = set.spec.pod_management_policy.as_deref() != Some("Parallel");
        let rolling = is_rolling(set);
        let partition = partition(set);
        let old_replicas = set
            .status
            .as_ref()
            .and_then(|s| s.current_replicas)
            .unwrap_or(0);
        let claims: HashMap<&str, &PersistentVolumeClaim> = observed
            .claims
            .iter()
            .filter_map(|c| Some((c.metadata.name.as_deref()?, c.as_ref())))
            .collect();
        let mut creates: Vec<NewPod> = Vec::new();
        let mut deletes: Vec<Victim> = Vec::new();
        let mut blocked = false;

        // Each ordinal in order: recreate failed pods, create missing ones, and (in
        // order) wait for each to be Running and Ready before looking further.
        for (slot, ord) in slots.iter().zip(start..) {
            let pname = pod_name(&name, ord);
            let Some(pod) = slot else {
                let wanted = claims_for(set, ord);
                let stale = wanted.iter().any(|(_, c)| {
                    claims
                        .get(c.name_any().as_str())
                        .is_some_and(|e| claim_is_stale(e, set, &pname))
                });
                if !stale {
                    let missing = wanted
                        .into_iter()
                        .map(|(_, c)| c)
                        .filter(|c| !claims.contains_key(c.name_any().as_str()))
                        .collect();
                    let below = match partition {
                        Some(p) => i64::from(ord) < i64::from(start) + i64::from(p),
                        None => i64::from(ord) < i64::from(start) + i64::from(old_replicas),
                    };
                    let pod = if rolling && below {
                        new_pod(set, &current_template, ord, &current_name)
                    } else {
                        new_pod(set, &set.spec.template, ord, &update_name)
                    };
                    creates.push(NewPod {
                        pod,
                        claims: missing,
                    });
                }
                if monotonic {
                    blocked = true;
                    break;
                }
                continue;
            };
            let ph = phase(pod);
            if ph == "Failed" || ph == "Succeeded" {
                if !is_terminating(pod) {
                    let note = if ph == "Failed" {
                        (
                            EventType::Warning,
                            "RecreatingFailedPod",
                            format!(
                                "StatefulSet {}/{name} is recreating failed Pod {pname}",
                                set.namespace().unwrap_or_default()
                            ),
                        )
                    } else {
                        (
                            EventType::Normal,
                            "RecreatingTerminatedPod",
                            format!(
                                "StatefulSet {}/{name} is recreating terminated Pod {pname}",
                                set.namespace().unwrap_or_default()
                            ),
                        )
                    };
                    deletes.push(Victim {
                        name: pname,
                        uid: pod.metadata.uid.clone().unwrap_or_default(),
                        note: Some(note),
                    });
                }
                if monotonic {
                    blocked = true;
                    break;
                }
                continue;
            }
            if ph == "Pending" {
                let missing: Vec<PersistentVolumeClaim> = claims_for(set, ord)
                    .into_iter()
                    .map(|(_, c)| c)
                    .filter(|c| !claims.contains_key(c.name_any().as_str()))
                    .collect();
                if !missing.is_empty() {
                    actions.push(Action::CreateClaims {
                        pod: pname.clone(),
                        claims: missing,
                    });
                }
            }
            if monotonic && (is_terminating(pod) || !running_and_available(pod, min_ready, now)) {
                blocked = true;
                break;
            }
            let labels = pod.metadata.labels.as_ref();
            if labels.and_then(|l| l.get(POD_NAME_LABEL)) != Some(&pname) {
                actions.push(Action::UpdatePod {
                    pod: pname.clone(),
                    patch: json!({"metadata": {
                        "resourceVersion": pod.metadata.resource_version,
                        "labels": {POD_NAME_LABEL: pname, POD_INDEX_LABEL: ord.to_string()},
                    }}),
                });
            }
            fix_claims(set, pod, ord, true, &claims, &mut actions);
        }
        if !creates.is_empty() {
            actions.push(Action::CreatePods(creates));
        }

        if !blocked {
            // Claims of pods about to go get the owner references of a scale-down.
            for &(ord, pod) in &condemned {
                fix_claims(set, pod, ord, false, &claims, &mut actions);
            }
            // Scale down from the highest ordinal, one at a time in order.
            for &(ord, pod) in &condemned {
                if is_terminating(pod) {
                    if monotonic {
                        blocked = true;
                        break;
                    }
                    continue;
                }
                if monotonic
                    && !running_and_available(pod, min_ready, now)
                    && first_unhealthy != Some(ord)
                {
                    blocked = true;
                    break;
                }
                deletes.push(Victim {
                    name: pod.name_any(),
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                    note: None,
                });
                if monotonic {
                    blocked = true;
                    break;
                }
            }
        }

        if !blocked && rolling {
            // Replace the highest pod not at the update revision, once every higher one
            // is available again; ordinals below the partition stay as they are.
            let min = usize::try_from(partition.unwrap_or(0)).unwrap_or(0);
            for i in (min..slots.len()).rev() {
                let Some(pod) = slots[i] else { break };
                if deletes
                    .iter()
                    .any(|v| Some(&v.name) == pod.metadata.name.as_ref())
                {
                    break;
                }
                if revision_of(pod) != update_name && !is_terminating(pod) {
                    deletes.push(Victim {
                        name: pod.name_any(),
                        uid: pod.metadata.uid.clone().unwrap_or_default(),
                        note: None,
                    });
                    current_replicas -= 1;
                    break;
                }
                if unavailable(pod, min_ready, now) {
                    break;
                }
            }
        }
        if !deletes.is_empty() {
            actions.push(Action::DeletePods(deletes));
        }
    }

    // The status, with a finished rolling update completed.
    let spec_replicas = replicas(set);
    let mut status = StatefulSetStatus {
        replicas: counts.replicas,
        ready_replicas: nonzero(counts.ready),
        available_replicas: Some(counts.available),
        current_replicas: nonzero(current_replicas),
        updated_replicas: nonzero(counts.updated),
        observed_generation: set.metadata.generation,
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        collision_count: Some(collisions),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if is_rolling(set)
        && counts.updated == spec_replicas
        && counts.ready == spec_replicas
        && counts.replicas == spec_replicas
    {
        status.current_replicas = nonzero(counts.updated);
        status.current_revision = Some(update_name.clone());
    }
    actions.push(Action::Status(Box::new(status)));

    // History beyond the limit, oldest first; revisions in use are never history.
    let limit = set.spec.revision_history_limit.unwrap_or(10);
    let mut live: HashSet<&str> = HashSet::from([current_name.as_str(), update_name.as_str()]);
    live.extend(all.iter().map(|p| revision_of(p)));
    let history: Vec<&&ControllerRevision> = revisions
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or("")))
        .collect();
    if let Ok(limit) = usize::try_from(limit) {
        if history.len() > limit {
            let gone = history[..history.len() - limit]
                .iter()
                .map(|r| (r.name_any(), r.metadata.uid.clone().unwrap_or_default()))
                .collect();
            actions.push(Action::DeleteRevisions(gone));
        }
    }

    if min_ready > 0 {
        // A ready pod turns available by the clock alone: look again then.
        let soonest = all
            .iter()
            .filter(|p| running_and_ready(p))
            .filter_map(|p| available_at(p, min_ready))
            .filter(|t| *t >= now)
            .min();
        if let Some(t) = soonest {
            let wait = t.duration_since(now).unsigned_abs() + Duration::from_secs(1);
            actions.push(Action::Requeue(wait));
        }
    }
    actions
}

/// Patches for the claims of `pod` whose owner references the retention policy wants
/// otherwise.
fn fix_claims(
    set: &StatefulSet,
    pod: &Pod,
    ordinal: i32,
    in_range: bool,
    claims: &HashMap<&str, &PersistentVolumeClaim>,
    actions: &mut Vec<Action>,
) {
    for (_, want) in claims_for(set, ordinal) {
        let Some(claim) = claims.get(want.name_any().as_str()) else {
            continue;
        };
        if let Some(refs) = claim_refs(claim, set, pod, in_range) {
            actions.push(Action::PatchClaim {
                claim: claim.name_any(),
                patch: owner_refs_patch(&claim.metadata, &refs),
            });
        }
    }
}

/// Registers the controller's hooks and returns its workers (5, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    StatefulSetController::watch(&ctx.caches, &queue);
    let controller = StatefulSetController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("statefulset-controller"),
    );
    ctx.workers(controller, queue, 5)
}

/// What a sync wrote, for waiting until the caches show it.
#[derive(Default)]
struct Written {
    pods: Vec<String>,
    deleted: Vec<(String, String)>,
    claims: Vec<(String, u64)>,
    revisions: Vec<(String, i64)>,
}

/// The controller: caches in, API calls out.
pub struct StatefulSetController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    events: Arc<Recorder>,
    settle: Duration,
}

fn kind_sets() -> Kind {
    Kind::of::<StatefulSet>(true)
}

fn kind_revisions() -> Kind {
    Kind::of::<ControllerRevision>(true)
}

fn kind_claims() -> Kind {
    Kind::of::<PersistentVolumeClaim>(true)
}

fn is_code(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(s) if codes.contains(&s.code))
}

fn resource_version(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Turns an object into JSON for the API, naming its kind if that fails.
fn encode<T: serde::Serialize>(what: &str, v: &T) -> Result<Value, Box<driver::Error>> {
    serde_json::to_value(v).map_err(|e| Box::new(driver::Error::Encode(what.into(), e)))
}

impl StatefulSetController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(StatefulSetController {
            caches,
            effects,
            clock,
            events,
            settle: SETTLE,
        })
    }

    /// Registers the hooks that fill `queue`: the sets, their pods (and orphan pods that
    /// a set would adopt), their revisions, and deleted claims (a pod waits for its
    /// stale claim to go).
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        caches
            .statefulsets
            .on_change(Box::new(move |s: &StatefulSet, _| {
                q.add(Key::of(&s.metadata))
            }));
        let (q, sets) = (queue.clone(), caches.statefulsets.clone());
        caches.pods.on_change(Box::new(move |pod: &Pod, _| {
            driver::queue_controller(&q, &sets, "apps", "StatefulSet", &pod.metadata, |s| {
                ordinal_of(&s.name_any(), &pod.name_any()).is_some()
                    && LabelMatcher::new(Some(&s.spec.selector))
                        .matches(pod.metadata.labels.as_ref())
            });
        }));
        let q = queue.clone();
        caches
            .controllerrevisions
            .on_change(Box::new(move |rev: &ControllerRevision, _| {
                if let Some(r) = controller_of(&rev.metadata).filter(|r| r.kind == "StatefulSet") {
                    q.add(Key {
                        namespace: rev.namespace().unwrap_or_default(),
                        name: r.name.clone(),
                    });
                }
            }));
        let (q, sets) = (queue.clone(), caches.statefulsets.clone());
        caches
            .pvcs
            .on_change(Box::new(move |claim: &PersistentVolumeClaim, change| {
                if change != driver::Change::Deleted {
                    return;
                }
                for s in sets.in_namespace(&claim.namespace().unwrap_or_default()) {
                    if !s
                        .spec
                        .volume_claim_templates
                        .as_deref()
                        .unwrap_or_default()
                        .is_empty()
                    {
                        q.add(Key::of(&s.metadata));
                    }
                }
            }));
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let Some(set) = self.caches.statefulsets.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        let pods = self.caches.pods.in_namespace(&key.namespace);
        let revisions = self.caches.controllerrevisions.in_namespace(&key.namespace);
        let claims = if set
            .spec
            .volume_claim_templates
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            Vec::new()
        } else {
            self.caches.pvcs.in_namespace(&key.namespace)
        };
        let actions = reconcile(
            &set,
            &Observed {
                pods: &pods,
                revisions: &revisions,
                claims: &claims,
                now: self.clock.now(),
            },
        );
        self.apply(&set, actions).await
    }

    /// Carries out `actions` in order. A failed claim (of a pod, revision or claim) or
    /// revision write stops the sync, as upstream's does; a failed create or delete of a
    /// pod still lets the status be written, then fails the sync (retried with backoff).
    pub async fn apply(&self, set: &StatefulSet, actions: Vec<Action>) -> driver::Result<Next> {
        let ns = set.namespace().unwrap_or_default();
        let mut next = Next::Done;
        let mut failed: Option<driver::Error> = None;
        let mut written = Written::default();
        for action in actions {
            match action {
                Action::CreateRevision(cr) => {
                    if !self.create_revision(set, &cr).await? {
                        // A name collision: counted in the status; the next sync tries
                        // the next name.
                        return Ok(Next::After(Duration::from_millis(100)));
                    }
                    written
                        .revisions
                        .push((cr.name_any(), cr.revision.unwrap_or(0)));
                }
                Action::RenumberRevision { name, revision } => {
                    let kind = kind_revisions();
                    match self
                        .effects
                        .merge_patch(&kind, &ns, &name, json!({ "revision": revision }))
                        .await
                    {
                        Ok(_) => written.revisions.push((name, revision)),
                        Err(e) if is_code(&e, &[404, 409]) => return Ok(Next::Done),
                        Err(e) => return Err(driver::api_error("patch", &kind, &ns, &name)(e)),
                    }
                }
                Action::AdoptRevision { name, patch } => {
                    let kind = kind_revisions();
                    match self.effects.merge_patch(&kind, &ns, &name, patch).await {
                        Ok(_) => {}
                        // Gone or changed meanwhile: its event brings us back.
                        Err(e) if is_code(&e, &[404, 409]) => return Ok(Next::Done),
                        Err(e) => return Err(driver::api_error("adopt", &kind, &ns, &name)(e)),
                    }
                }
                Action::Adopt { pod, patch } | Action::Release { pod, patch } => {
                    let kind = Kind::pods();
                    match self.effects.merge_patch(&kind, &ns, &pod, patch).await {
                        Ok(_) => {}
                        Err(e) if is_code(&e, &[404, 409]) => return Ok(Next::Done),
                        Err(e) => return Err(driver::api_error("patch", &kind, &ns, &pod)(e)),
                    }
                }
                Action::CreatePods(pods) => {
                    if let Err(e) = self.create_pods(set, &pods, &mut written).await {
                        failed.get_or_insert(e);
                    }
                }
                Action::CreateClaims { pod, claims } => {
                    match self.create_claims(set, &pod, &claims).await {
                        Ok(made) => written.claims.extend(made),
                        Err((_, e)) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
                Action::UpdatePod { pod, patch } => {
                    if let Err(e) = self.update_pod(set, &pod, patch).await {
                        failed.get_or_insert(e);
                    }
                }
                Action::PatchClaim { claim, patch } => {
                    let kind = kind_claims();
                    match self.effects.merge_patch(&kind, &ns, &claim, patch).await {
                        Ok(v) => written.claims.push((claim, resource_version(&v))),
                        // The claim changed meanwhile: nothing further may be deleted
                        // until its owners are right; look again shortly.
                        Err(e) if is_code(&e, &[404, 409]) => {
                            return Ok(Next::After(Duration::from_secs(1)))
                        }
                        Err(e) => return Err(driver::api_error("patch", &kind, &ns, &claim)(e)),
                    }
                }
                Action::DeletePods(victims) => {
                    if let Err(e) = self.delete_pods(set, &victims, &mut written).await {
                        failed.get_or_insert(e);
                    }
                }
                Action::Status(status) => self.write_status(set, *status).await?,
                Action::DeleteRevisions(gone) => {
                    let kind = kind_revisions();
                    for (name, uid) in gone {
                        match self
                            .effects
                            .delete(&kind, &ns, &name, Some(&uid), None)
                            .await
                        {
                            Ok(()) => {}
                            Err(e) if is_code(&e, &[404, 409]) => {}
                            Err(e) => {
                                failed.get_or_insert(driver::api_error(
                                    "delete", &kind, &ns, &name,
                                )(e));
                            }
                        }
                    }
                }
                Action::Requeue(d) => next = next.min(Next::After(d)),
            }
        }
        self.wait_for_writes(&ns, &written).await;
        match failed {
            Some(e) => Err(e),
            None => Ok(next),
        }
    }

    /// Creates a revision; `false` when its name was taken by another template (the
    /// collision is then counted in the set's status).
    async fn create_revision(
        &self,
        set: &StatefulSet,
        cr: &ControllerRevision,
    ) -> driver::Result<bool> {
        let ns = set.namespace().unwrap_or_default();
        let kind = kind_revisions();
        let name = cr.name_any();
        let body = encode("ControllerRevision", cr).map_err(|e| *e)?;
        match self.effects.create(&kind, &ns, body).await {
            Ok(_) => return Ok(true),
            Err(e) if is_code(&e, &[409]) => {}
            Err(e) => return Err(driver::api_error("create", &kind, &ns, &name)(e)),
        }
        let existing = self
            .effects
            .get(&kind, &ns, &name)
            .await
            .map_err(driver::api_error("get", &kind, &ns, &name))?;
        let same = existing.as_ref().and_then(|e| e.get("data")) == Some(&cr.data.0);
        if same {
            return Ok(true);
        }
        let mut body = set.clone();
        let status = body.status.get_or_insert_with(Default::default);
        status.collision_count = Some(status.collision_count.unwrap_or(0).saturating_add(1));
        let body = encode("StatefulSet", &body).map_err(|e| *e)?;
        let sets = kind_sets();
        match self
            .effects
            .replace_status(&sets, &ns, &set.name_any(), body)
            .await
        {
            Ok(_) => Ok(false),
            Err(e) if is_code(&e, &[404, 409]) => Ok(false),
            Err(e) => Err(driver::api_error(
                "update status of",
                &sets,
                &ns,
                &set.name_any(),
            )(e)),
        }
    }

    async fn write_status(
        &self,
        set: &StatefulSet,
        status: StatefulSetStatus,
    ) -> driver::Result<()> {
        if set.status.as_ref().is_some_and(|s| same_status(s, &status)) {
            return Ok(());
        }
        let ns = set.namespace().unwrap_or_default();
        let kind = kind_sets();
        let mut body = set.clone();
        body.status = Some(status);
        let body = encode("StatefulSet", &body).map_err(|e| *e)?;
        match self
            .effects
            .replace_status(&kind, &ns, &set.name_any(), body)
            .await
        {
            Ok(_) => Ok(()),
            // A newer set is on its way through the watch, and will bring us back.
            Err(e) if is_code(&e, &[404, 409]) => Ok(()),
            Err(e) => Err(driver::api_error(
                "update status of",
                &kind,
                &ns,
                &set.name_any(),
            )(e)),
        }
    }

    /// Creates pods in batches of 1, 2, 4, … (at most [`MAX_BATCH`]), stopping after the
    /// first batch with a failure.
    async fn create_pods(
        &self,
        set: &StatefulSet,
        pods: &[NewPod],
        written: &mut Written,
    ) -> driver::Result<()> {
        let mut rest = pods;
        let mut batch = 1usize;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(batch.min(rest.len()));
            let results = join_all(now.iter().map(|p| self.create_pod(set, p))).await;
            let mut failed = None;
            for (p, r) in now.iter().zip(results) {
                match r {
                    Ok(claims) => {
                        written.pods.push(p.pod.name_any());
                        written.claims.extend(claims);
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            rest = later;
            batch = (batch * 2).min(MAX_BATCH);
        }
        Ok(())
    }

    /// Creates one pod after its missing claims; answers the claims made.
    async fn create_pod(
        &self,
        set: &StatefulSet,
        new: &NewPod,
    ) -> driver::Result<Vec<(String, u64)>> {
        let ns = set.namespace().unwrap_or_default();
        let kind = Kind::pods();
        let pod = new.pod.name_any();
        let set_name = set.name_any();
        let me = reference(set);
        let made = match self.create_claims(set, &pod, &new.claims).await {
            Ok(made) => made,
            Err((msg, e)) => {
                let text =
                    format!("create Pod {pod} in StatefulSet {set_name} failed error: {msg}");
                self.events
                    .record(&me, EventType::Warning, "FailedCreate", &text)
                    .await;
                return Err(e);
            }
        };
        let body = encode("Pod", &new.pod).map_err(|e| *e)?;
        match self.effects.create(&kind, &ns, body).await {
            Ok(_) => {
                let text = format!("create Pod {pod} in StatefulSet {set_name} successful");
                self.events
                    .record(&me, EventType::Normal, "SuccessfulCreate", &text)
                    .await;
                Ok(made)
            }
            // Already there: the cache has not shown it yet.
            Err(e) if is_code(&e, &[409]) => Ok(made),
            Err(e) => {
                let text = format!(
                    "create Pod {pod} in StatefulSet {set_name} failed error: {}",
                    driver::api_message(&e)
                );
                self.events
                    .record(&me, EventType::Warning, "FailedCreate", &text)
                    .await;
                Err(driver::api_error("create", &kind, &ns, &pod)(e))
            }
        }
    }

    /// Creates claims for `pod`, with their Events; on failure, the message for the
    /// pod's Event and the error.
    async fn create_claims(
        &self,
        set: &StatefulSet,
        pod: &str,
        claims: &[PersistentVolumeClaim],
    ) -> Result<Vec<(String, u64)>, (String, driver::Error)> {
        let ns = set.namespace().unwrap_or_default();
        let kind = kind_claims();
        let set_name = set.name_any();
        let me = reference(set);
        let mut made = Vec::new();
        let mut failed = None;
        for claim in claims {
            let name = claim.name_any();
            let body = match encode("PersistentVolumeClaim", claim) {
                Ok(b) => b,
                Err(e) => return Err((e.to_string(), *e)),
            };
            match self.effects.create(&kind, &ns, body).await {
                Ok(v) => {
                    let text =
                        format!("create Claim {name} Pod {pod} in StatefulSet {set_name} success");
                    self.events
                        .record(&me, EventType::Normal, "SuccessfulCreate", &text)
                        .await;
                    made.push((name, resource_version(&v)));
                }
                Err(e) if is_code(&e, &[409]) => {}
                Err(e) => {
                    let msg = driver::api_message(&e);
                    let text = format!(
                        "create Claim {name} for Pod {pod} in StatefulSet {set_name} \
                         failed error: {msg}"
                    );
                    self.events
                        .record(&me, EventType::Warning, "FailedCreate", &text)
                        .await;
                    failed.get_or_insert((
                        format!("failed to create PVC {name}: {msg}"),
                        driver::api_error("create", &kind, &ns, &name)(e),
                    ));
                }
            }
        }
        match failed {
            Some(f) => Err(f),
            None => Ok(made),
        }
    }

    async fn update_pod(&self, set: &StatefulSet, pod: &str, patch: Value) -> driver::Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let kind = Kind::pods();
        let me = reference(set);
        let set_name = set.name_any();
        match self.effects.merge_patch(&kind, &ns, pod, patch).await {
            Ok(_) => {
                let text = format!("update Pod {pod} in StatefulSet {set_name} successful");
                self.events
                    .record(&me, EventType::Normal, "SuccessfulUpdate", &text)
                    .await;
                Ok(())
            }
            Err(e) if is_code(&e, &[404, 409]) => Ok(()),
            Err(e) => {
                let text = format!(
                    "update Pod {pod} in StatefulSet {set_name} failed error: {}",
                    driver::api_message(&e)
                );
                self.events
                    .record(&me, EventType::Warning, "FailedUpdate", &text)
                    .await;
                Err(driver::api_error("update", &kind, &ns, pod)(e))
            }
        }
    }

    async fn delete_pods(
        &self,
        set: &StatefulSet,
        victims: &[Victim],
        written: &mut Written,
    ) -> driver::Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let kind = Kind::pods();
        let me = reference(set);
        let set_name = set.name_any();
        for v in victims {
            if let Some((t, reason, msg)) = &v.note {
                self.events.record(&me, *t, reason, msg).await;
            }
        }
        let results = join_all(victims.iter().map(|v| {
            let uid = (!v.uid.is_empty()).then_some(v.uid.as_str());
            self.effects.delete(&kind, &ns, &v.name, uid, None)
        }))
        .await;
        let mut failed = None;
        let mut notes = Vec::new();
        for (v, r) in victims.iter().zip(results) {
            match r {
                Ok(()) => {
                    notes.push((
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("delete Pod {} in StatefulSet {set_name} successful", v.name),
                    ));
                    written.deleted.push((v.name.clone(), v.uid.clone()));
                }
                // Gone already, or replaced by a newer pod of that name.
                Err(e) if is_code(&e, &[404, 409]) => {}
                Err(e) => {
                    notes.push((
                        EventType::Warning,
                        "FailedDelete",
                        format!(
                            "delete Pod {} in StatefulSet {set_name} failed error: {}",
                            v.name,
                            driver::api_message(&e)
                        ),
                    ));
                    failed.get_or_insert(driver::api_error("delete", &kind, &ns, &v.name)(e));
                }
            }
        }
        join_all(
            notes
                .iter()
                .map(|(t, reason, msg)| self.events.record(&me, *t, reason, msg)),
        )
        .await;
        failed.map_or(Ok(()), Err)
    }

    /// Waits (at most the settle time each) until the caches show this sync's writes, so
    /// the next decision does not repeat them (upstream's expectations).
    async fn wait_for_writes(&self, ns: &str, w: &Written) {
        if !w.pods.is_empty() || !w.deleted.is_empty() {
            self.caches
                .pods
                .wait_for(
                    |c| {
                        w.pods.iter().all(|n| c.get(ns, n).is_some())
                            && w.deleted.iter().all(|(n, u)| {
                                c.get(ns, n).is_none_or(|p| {
                                    p.metadata.deletion_timestamp.is_some()
                                        || p.metadata.uid.as_deref() != Some(u)
                                })
                            })
                    },
                    self.settle,
                )
                .await;
        }
        if !w.claims.is_empty() {
            self.caches
                .pvcs
                .wait_for(
                    |c| {
                        w.claims.iter().all(|(n, rv)| {
                            c.get(ns, n).is_some_and(|p| {
                                p.metadata
                                    .resource_version
                                    .as_deref()
                                    .and_then(|r| r.parse::<u64>().ok())
                                    .unwrap_or(0)
                                    >= *rv
                            })
                        })
                    },
                    self.settle,
                )
                .await;
        }
        if !w.revisions.is_empty() {
            self.caches
                .controllerrevisions
                .wait_for(
                    |c| {
                        w.revisions.iter().all(|(n, number)| {
                            c.get(ns, n).is_some_and(|r| r.revision == Some(*number))
                        })
                    },
                    self.settle,
                )
                .await;
        }
    }
}

impl Reconciler for StatefulSetController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "statefulset"
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
        RollingUpdateStatefulSetStrategy, StatefulSetPersistentVolumeClaimRetentionPolicy,
        StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{Container, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use kube::runtime::watcher;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    fn labels_of(meta: &ObjectMeta) -> BTreeMap<String, String> {
        meta.labels.clone().unwrap_or_default()
    }

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

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: labels(&[("app", "web")]),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "nginx".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn claim_template() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: labels(&[("tier", "db")]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn sts(replicas: i32, image: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("sts-uid".into()),
                generation: Some(3),
                resource_version: Some("9".into()),
                ..Default::default()
            },
            spec: StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some("web".into()),
                selector: LabelSelector {
                    match_labels: labels(&[("app", "web")]),
                    ..Default::default()
                },
                template: template(image),
                volume_claim_templates: Some(vec![claim_template()]),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateStatefulSetStrategy {
                        partition: Some(0),
                        max_unavailable: None,
                    }),
                }),
                ..Default::default()
            },
            status: None,
        }
    }

    fn revision(set: &StatefulSet, number: i64) -> Arc<ControllerRevision> {
        let mut r = new_revision(set, number, 0);
        r.metadata.uid = Some(format!("rev-{number}"));
        Arc::new(r)
    }

    fn name_of(set: &StatefulSet) -> String {
        new_revision(set, 1, 0).name_any()
    }

    /// A pod of the set at ordinal `ord` made from `set`'s template, in `phase`, ready
    /// or not.
    fn pod(set: &StatefulSet, ord: i32, phase: &str, ready: bool) -> Arc<Pod> {
        let mut p = new_pod(set, &set.spec.template, ord, &name_of(set));
        p.metadata.uid = Some(format!("u-{ord}"));
        p.metadata.resource_version = Some("5".into());
        p.metadata.creation_timestamp = Some(Time(t(0)));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(t(1))),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn ready(set: &StatefulSet, ord: i32) -> Arc<Pod> {
        pod(set, ord, "Running", true)
    }

    fn claim(set: &StatefulSet, ord: i32) -> Arc<PersistentVolumeClaim> {
        let (_, mut c) = claims_for(set, ord).remove(0);
        c.metadata.uid = Some(format!("c-{ord}"));
        c.metadata.resource_version = Some("4".into());
        Arc::new(c)
    }

    fn decide(
        set: &StatefulSet,
        pods: &[Arc<Pod>],
        revisions: &[Arc<ControllerRevision>],
        claims: &[Arc<PersistentVolumeClaim>],
    ) -> Vec<Action> {
        reconcile(
            set,
            &Observed {
                pods,
                revisions,
                claims,
                now: t(100),
            },
        )
    }

    fn created(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreatePods(p) => Some(p.iter().map(|p| p.pod.name_any())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn deleted(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::DeletePods(v) => Some(v.iter().map(|v| v.name.clone())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn status(actions: &[Action]) -> StatefulSetStatus {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Status(s) => Some((**s).clone()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn ordered_creation_waits_for_each_pod_to_be_running_and_ready() {
        let set = sts(3, "nginx:1.27");
        let revs = [revision(&set, 1)];
        // Nothing yet: the revision (first sync) and web-0 only.
        let a = decide(&set, &[], &[], &[]);
        assert!(matches!(&a[0], Action::CreateRevision(r) if r.revision == Some(1)));
        assert_eq!(created(&a), ["web-0"]);
        // web-0 exists but is not ready: nothing more.
        let a = decide(
            &set,
            &[pod(&set, 0, "Pending", false)],
            &revs,
            &[claim(&set, 0)],
        );
        assert!(created(&a).is_empty(), "{a:#?}");
        let a = decide(
            &set,
            &[pod(&set, 0, "Running", false)],
            &revs,
            &[claim(&set, 0)],
        );
        assert!(created(&a).is_empty(), "{a:#?}");
        // Ready: web-1 next, then web-2 once web-1 is ready too.
        let a = decide(&set, &[ready(&set, 0)], &revs, &[claim(&set, 0)]);
        assert_eq!(created(&a), ["web-1"]);
        let pods = [ready(&set, 0), pod(&set, 1, "Running", false)];
        assert!(created(&decide(&set, &pods, &revs, &[])).is_empty());
        let pods = [ready(&set, 0), ready(&set, 1)];
        assert_eq!(created(&decide(&set, &pods, &revs, &[])), ["web-2"]);
        // A gap below is filled before anything above.
        let pods = [ready(&set, 1), ready(&set, 2)];
        assert_eq!(created(&decide(&set, &pods, &revs, &[])), ["web-0"]);
    }

    #[test]
    fn pods_have_stable_identity_claims_and_their_set_as_controller() {
        let mut set = sts(2, "nginx:1.27");
        set.spec.ordinals =
            Some(k8s_openapi::api::apps::v1::StatefulSetOrdinals { start: Some(5) });
        let a = decide(&set, &[], &[], &[]);
        let Some(Action::CreatePods(new)) = a.iter().find(|a| matches!(a, Action::CreatePods(_)))
        else {
            panic!("{a:#?}")
        };
        let p = &new[0].pod;
        assert_eq!(p.name_any(), "web-5");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let l = labels_of(&p.metadata);
        assert_eq!(l[POD_NAME_LABEL], "web-5");
        assert_eq!(l[POD_INDEX_LABEL], "5");
        assert_eq!(l[REVISION_LABEL], name_of(&set));
        assert!(l[REVISION_LABEL].starts_with("web-"));
        assert_eq!(l["app"], "web");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-5"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let v = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(v.name, "data");
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-5"
        );
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("StatefulSet", "sts-uid", Some(true), Some(true))
        );
        // The claim comes first, with the template's and the selector's labels.
        let c = &new[0].claims[0];
        assert_eq!(c.name_any(), "data-web-5");
        assert_eq!(c.metadata.labels, labels(&[("app", "web"), ("tier", "db")]));
        assert!(c.metadata.owner_references.is_none());
        assert_eq!(ordinal_of("web", "web-5"), Some(5));
        assert_eq!(ordinal_of("web", "web-05"), None);
        assert_eq!(ordinal_of("web", "web-1-2"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
    }

    #[test]
    fn existing_claims_are_reused_and_a_terminating_one_blocks_its_pod() {
        let set = sts(2, "nginx:1.27");
        let revs = [revision(&set, 1)];
        let a = decide(
            &set,
            &[ready(&set, 0)],
            &revs,
            &[claim(&set, 0), claim(&set, 1)],
        );
        let Some(Action::CreatePods(new)) = a.iter().find(|a| matches!(a, Action::CreatePods(_)))
        else {
            panic!("{a:#?}")
        };
        assert_eq!(new[0].pod.name_any(), "web-1");
        assert!(new[0].claims.is_empty());
        let mut going = (*claim(&set, 1)).clone();
        going.metadata.deletion_timestamp = Some(Time(t(50)));
        let a = decide(&set, &[ready(&set, 0)], &revs, &[Arc::new(going)]);
        assert!(created(&a).is_empty(), "{a:#?}");
        // A pending pod whose claim went missing gets it back.
        let a = decide(&set, &[pod(&set, 0, "Pending", false)], &revs, &[]);
        assert!(matches!(&a[0], Action::CreateClaims { pod, claims }
            if pod == "web-0" && claims[0].name_any() == "data-web-0"));
    }

    #[test]
    fn retention_policy_sets_claim_owners() {
        let mut set = sts(1, "nginx:1.27");
        set.spec.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Delete".into()),
                when_scaled: Some("Delete".into()),
            });
        let revs = [revision(&set, 1)];
        // A pod in range: its claim is owned by the set.
        let a = decide(&set, &[ready(&set, 0)], &revs, &[claim(&set, 0)]);
        let patch = a
            .iter()
            .find_map(|a| match a {
                Action::PatchClaim { claim, patch } if claim == "data-web-0" => Some(patch),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            patch["metadata"]["ownerReferences"][0]["kind"],
            "StatefulSet"
        );
        assert_eq!(patch["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(patch["metadata"]["resourceVersion"], "4");
        // A pod scaled away: its claim is owned by the pod, and patched before the
        // pod is deleted.
        let pods = [ready(&set, 0), ready(&set, 1)];
        let mut owned = (*claim(&set, 0)).clone();
        owned.metadata.owner_references = Some(vec![controller_ref(&set)]);
        let a = decide(&set, &pods, &revs, &[Arc::new(owned), claim(&set, 1)]);
        let i = a
            .iter()
            .position(|a| {
                matches!(a, Action::PatchClaim { claim, patch }
                if claim == "data-web-1"
                    && patch["metadata"]["ownerReferences"][0]["kind"] == "Pod"
                    && patch["metadata"]["ownerReferences"][0]["uid"] == "u-1")
            })
            .unwrap_or_else(|| panic!("{a:#?}"));
        let j = a
            .iter()
            .position(|a| matches!(a, Action::DeletePods(_)))
            .unwrap();
        assert!(i < j);
        assert_eq!(deleted(&a), ["web-1"]);
        // Retain (the default): no owners, nothing to patch.
        let set = sts(1, "nginx:1.27");
        let a = decide(&set, &[ready(&set, 0)], &revs, &[claim(&set, 0)]);
        assert!(!a.iter().any(|a| matches!(a, Action::PatchClaim { .. })));
    }

    #[test]
    fn parallel_creates_and_deletes_all_at_once() {
        let mut set = sts(3, "nginx:1.27");
        set.spec.pod_management_policy = Some("Parallel".into());
        let revs = [revision(&set, 1)];
        let a = decide(&set, &[], &revs, &[]);
        assert_eq!(created(&a), ["web-0", "web-1", "web-2"]);
        let a = decide(&set, &[pod(&set, 1, "Pending", false)], &revs, &[]);
        assert_eq!(created(&a), ["web-0", "web-2"]);
        set.spec.replicas = Some(1);
        let pods = [
            ready(&set, 0),
            pod(&set, 1, "Pending", false),
            ready(&set, 2),
        ];
        let a = decide(&set, &pods, &revs, &[]);
        assert_eq!(deleted(&a), ["web-2", "web-1"]);
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal_one_at_a_time() {
        let set = sts(2, "nginx:1.27");
        let revs = [revision(&set, 1)];
        let pods: Vec<Arc<Pod>> = (0..5).map(|o| ready(&set, o)).collect();
        assert_eq!(deleted(&decide(&set, &pods, &revs, &[])), ["web-4"]);
        // web-4 is terminating: wait for it to go.
        let mut going = (*pods[4]).clone();
        going.metadata.deletion_timestamp = Some(Time(t(90)));
        let mut p = pods.clone();
        p[4] = Arc::new(going);
        assert!(deleted(&decide(&set, &p, &revs, &[])).is_empty());
        // Gone: web-3 next.
        assert_eq!(deleted(&decide(&set, &pods[..4], &revs, &[])), ["web-3"]);
        // An unhealthy pod in range blocks the scale-down.
        let p = [
            ready(&set, 0),
            pod(&set, 1, "Running", false),
            ready(&set, 2),
        ];
        assert!(deleted(&decide(&set, &p, &revs, &[])).is_empty());
        // The first unhealthy pod may itself be removed.
        let p = [
            ready(&set, 0),
            ready(&set, 1),
            pod(&set, 2, "Running", false),
        ];
        assert_eq!(deleted(&decide(&set, &p, &revs, &[])), ["web-2"]);
    }

    #[test]
    fn failed_pods_are_deleted_to_be_recreated() {
        let set = sts(2, "nginx:1.27");
        let revs = [revision(&set, 1)];
        let a = decide(
            &set,
            &[ready(&set, 0), pod(&set, 1, "Failed", false)],
            &revs,
            &[],
        );
        let Some(Action::DeletePods(v)) = a.iter().find(|a| matches!(a, Action::DeletePods(_)))
        else {
            panic!("{a:#?}")
        };
        assert_eq!(v[0].name, "web-1");
        assert_eq!(v[0].uid, "u-1");
        let (ty, reason, msg) = v[0].note.clone().unwrap();
        assert_eq!(ty, EventType::Warning);
        assert_eq!(reason, "RecreatingFailedPod");
        assert_eq!(
            msg,
            "StatefulSet default/web is recreating failed Pod web-1"
        );
        assert!(created(&a).is_empty());
        // Once it is gone, it is created again.
        assert_eq!(
            created(&decide(&set, &[ready(&set, 0)], &revs, &[])),
            ["web-1"]
        );
    }

    /// The set moved from nginx:1.27 (revision 1) to nginx:1.28 (revision 2).
    fn updating(partition: i32) -> (StatefulSet, Vec<Arc<ControllerRevision>>) {
        let old = sts(3, "nginx:1.27");
        let mut set = sts(3, "nginx:1.28");
        set.spec.update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateStatefulSetStrategy {
                partition: Some(partition),
                max_unavailable: None,
            }),
        });
        set.status = Some(StatefulSetStatus {
            current_revision: Some(name_of(&old)),
            update_revision: Some(name_of(&old)),
            current_replicas: Some(3),
            replicas: 3,
            ..Default::default()
        });
        (
            set,
            vec![revision(&old, 1), revision(&sts(3, "nginx:1.28"), 2)],
        )
    }

    #[test]
    fn rolling_update_goes_down_from_the_highest_ordinal_and_stops_at_the_partition() {
        let old = sts(3, "nginx:1.27");
        let (set, revs) = updating(1);
        let new = |o| ready(&set, o);
        let gone = |o| ready(&old, o);
        // All old: web-2 goes first.
        let pods = [gone(0), gone(1), gone(2)];
        let a = decide(&set, &pods, &revs, &[]);
        assert_eq!(deleted(&a), ["web-2"]);
        let s = status(&a);
        assert_eq!(s.current_revision.as_deref(), Some(name_of(&old).as_str()));
        assert_eq!(s.update_revision.as_deref(), Some(name_of(&set).as_str()));
        assert_eq!(s.current_replicas, Some(2));
        assert_eq!(s.updated_replicas, None);
        // web-2 is gone: it comes back at the new revision.
        let a = decide(&set, &[gone(0), gone(1)], &revs, &[]);
        let Some(Action::CreatePods(p)) = a.iter().find(|a| matches!(a, Action::CreatePods(_)))
        else {
            panic!("{a:#?}")
        };
        assert_eq!(p[0].pod.name_any(), "web-2");
        assert_eq!(labels_of(&p[0].pod.metadata)[REVISION_LABEL], name_of(&set));
        assert_eq!(
            p[0].pod.spec.as_ref().unwrap().containers[0]
                .image
                .as_deref(),
            Some("nginx:1.28")
        );
        // The new web-2 is not ready yet: wait.
        let pods = [gone(0), gone(1), pod(&set, 2, "Running", false)];
        assert!(deleted(&decide(&set, &pods, &revs, &[])).is_empty());
        // Ready: web-1 next; then web-0 stays (below the partition).
        let pods = [gone(0), gone(1), new(2)];
        assert_eq!(deleted(&decide(&set, &pods, &revs, &[])), ["web-1"]);
        let pods = [gone(0), new(1), new(2)];
        let a = decide(&set, &pods, &revs, &[]);
        assert!(deleted(&a).is_empty());
        let s = status(&a);
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.current_replicas, Some(1));
        // A pod below the partition that is recreated keeps the current revision.
        let a = decide(&set, &[new(1), new(2)], &revs, &[]);
        let Some(Action::CreatePods(p)) = a.iter().find(|a| matches!(a, Action::CreatePods(_)))
        else {
            panic!("{a:#?}")
        };
        assert_eq!(labels_of(&p[0].pod.metadata)[REVISION_LABEL], name_of(&old));
        assert_eq!(
            p[0].pod.spec.as_ref().unwrap().containers[0]
                .image
                .as_deref(),
            Some("nginx:1.27")
        );
        // With partition 0 the rollout completes: the update revision becomes current.
        let (set, revs) = updating(0);
        let new = |o| ready(&set, o);
        let s = status(&decide(&set, &[new(0), new(1), new(2)], &revs, &[]));
        assert_eq!(s.current_revision, s.update_revision);
        assert_eq!(s.current_replicas, Some(3));
        assert_eq!(s.updated_replicas, Some(3));
    }

    #[test]
    fn on_delete_replaces_nothing_by_itself() {
        let old = sts(2, "nginx:1.27");
        let (mut set, revs) = updating(0);
        set.spec.replicas = Some(2);
        set.spec.update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
        let a = decide(&set, &[ready(&old, 0), ready(&old, 1)], &revs, &[]);
        assert!(deleted(&a).is_empty());
        // A deleted pod comes back at the update revision.
        let a = decide(&set, &[ready(&old, 0)], &revs, &[]);
        let Some(Action::CreatePods(p)) = a.iter().find(|a| matches!(a, Action::CreatePods(_)))
        else {
            panic!("{a:#?}")
        };
        assert_eq!(labels_of(&p[0].pod.metadata)[REVISION_LABEL], name_of(&set));
    }

    #[test]
    fn status_counts_and_revisions() {
        let mut set = sts(3, "nginx:1.27");
        set.status = Some(StatefulSetStatus {
            collision_count: Some(0),
            ..Default::default()
        });
        let revs = [revision(&set, 1)];
        let pods = [
            ready(&set, 0),
            ready(&set, 1),
            pod(&set, 2, "Pending", false),
        ];
        let a = decide(&set, &pods, &revs, &[]);
        assert!(!a.iter().any(|a| matches!(a, Action::CreateRevision(_))));
        let s = status(&a);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.updated_replicas, Some(3));
        assert_eq!(s.current_replicas, Some(3));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.collision_count, Some(0));
        assert_eq!(s.current_revision.as_deref(), Some(name_of(&set).as_str()));
        // Ready: complete.
        let pods = [ready(&set, 0), ready(&set, 1), ready(&set, 2)];
        let s = status(&decide(&set, &pods, &revs, &[]));
        assert_eq!(s.ready_replicas, Some(3));
        assert!(same_status(&s, &s.clone()));
        // minReadySeconds: ready at t(1), available at t(201); look again then.
        set.spec.min_ready_seconds = Some(200);
        let a = decide(&set, &pods, &revs, &[]);
        assert_eq!(status(&a).available_replicas, Some(0));
        assert!(a.contains(&Action::Requeue(Duration::from_secs(102))));
        // A collision count changes the revision's name.
        assert_ne!(
            new_revision(&set, 1, 0).name_any(),
            new_revision(&set, 1, 1).name_any()
        );
        assert_eq!(template_of(&revs[0]), Some(set.spec.template.clone()));
    }

    #[test]
    fn going_back_renumbers_the_old_revision_and_history_is_trimmed() {
        let (mut set, revs) = updating(0);
        // Back to nginx:1.27, which revision 1 holds.
        set.spec.template = template("nginx:1.27");
        let a = decide(&set, &[], &revs, &[]);
        assert!(a.contains(&Action::RenumberRevision {
            name: revs[0].name_any(),
            revision: 3
        }));
        assert!(!a.iter().any(|a| matches!(a, Action::CreateRevision(_))));
        // Five revisions, limit 1: of the three no pod uses, the two oldest go.
        let mut set = sts(1, "v5");
        set.spec.revision_history_limit = Some(1);
        let revs: Vec<_> = (1..=5)
            .map(|n| revision(&sts(1, &format!("v{n}")), i64::from(n)))
            .collect();
        let pods = [ready(&sts(1, "v1"), 0)];
        let a = decide(&set, &pods, &revs, &[]);
        let Some(Action::DeleteRevisions(gone)) = a.last() else {
            panic!("{a:#?}")
        };
        let names: Vec<&str> = gone.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [revs[1].name_any(), revs[2].name_any()]);
    }

    #[test]
    fn orphans_are_adopted_and_strays_released() {
        let set = sts(2, "nginx:1.27");
        let revs = [revision(&set, 1)];
        let mut orphan = (*ready(&set, 0)).clone();
        orphan.metadata.owner_references = None;
        let mut stray = (*ready(&set, 1)).clone();
        stray.metadata.labels = labels(&[("app", "other")]);
        let a = decide(&set, &[Arc::new(orphan), Arc::new(stray)], &revs, &[]);
        assert!(matches!(&a[0], Action::Adopt { pod, patch }
            if pod == "web-0" && patch["metadata"]["ownerReferences"][0]["uid"] == "sts-uid"));
        assert!(matches!(&a[1], Action::Release { pod, patch }
            if pod == "web-1" && patch["metadata"]["ownerReferences"] == json!([])));
        assert_eq!(created(&a), ["web-1"]);
    }

    fn controller(fx: Arc<Recording>) -> (Arc<StatefulSetController>, Arc<Caches>) {
        let caches = Arc::new(Caches::new());
        let clock = Arc::new(FixedClock(Mutex::new(t(0))));
        let events = Arc::new(Recorder::new(
            fx.clone(),
            clock.clone(),
            "statefulset-controller",
        ));
        (
            StatefulSetController::new(caches.clone(), fx, clock, events),
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
    async fn driver_creates_revision_claim_and_pod_with_upstreams_events() {
        let fx = Arc::new(Recording::default());
        let (c, caches) = controller(fx.clone());
        let queue = Queue::new();
        StatefulSetController::watch(&caches, &queue);
        feed(&caches.statefulsets, vec![sts(3, "nginx:1.27")]).await;
        feed(&caches.pods, vec![]).await;
        feed(&caches.controllerrevisions, vec![]).await;
        feed(&caches.pvcs, vec![]).await;
        let key = queue.next().await;
        assert_eq!(key.name, "web");
        assert_eq!(c.sync(&key).await.unwrap(), Next::Done);
        let calls = fx.calls();
        let rev = name_of(&sts(3, "nginx:1.27"));
        let at = |prefix: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in {calls:#?}"))
        };
        let r = at(&format!("create ControllerRevision default/{rev}"));
        let claim = at("create PersistentVolumeClaim default/data-web-0");
        let pod = at("create Pod default/web-0");
        assert!(r < claim && claim < pod, "{calls:#?}");
        assert!(!calls.iter().any(|c| c.contains("web-1")), "{calls:#?}");
        let status = &calls[at("status StatefulSet default/web")];
        assert!(
            status.contains(&format!(r#""updateRevision":"{rev}""#)),
            "{status}"
        );
        assert!(status.contains(r#""observedGeneration":3"#), "{status}");
        let events: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with("create Event default/web."))
            .collect();
        assert_eq!(events.len(), 2, "{calls:#?}");
    }

    /// Effects that keep the messages of the Events created, and answer everything
    /// else as [`Recording`] does.
    #[derive(Default)]
    struct Messages {
        inner: Recording,
        messages: Mutex<Vec<String>>,
    }

    impl Effects for Messages {
        fn create<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            body: Value,
        ) -> driver::Call<'a, Value> {
            if kind.resource.kind == "Event" {
                let m = format!(
                    "{} {}",
                    body["reason"].as_str().unwrap(),
                    body["message"].as_str().unwrap()
                );
                self.messages.lock().unwrap().push(m);
            }
            self.inner.create(kind, namespace, body)
        }
        fn merge_patch<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            patch: Value,
        ) -> driver::Call<'a, Value> {
            self.inner.merge_patch(kind, namespace, name, patch)
        }
        fn replace_status<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            body: Value,
        ) -> driver::Call<'a, Value> {
            self.inner.replace_status(kind, namespace, name, body)
        }
        fn delete<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            uid: Option<&'a str>,
            p: Option<kube::api::PropagationPolicy>,
        ) -> driver::Call<'a, ()> {
            self.inner.delete(kind, namespace, name, uid, p)
        }
        fn delete_now<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            uid: Option<&'a str>,
        ) -> driver::Call<'a, ()> {
            self.inner.delete_now(kind, namespace, name, uid)
        }
        fn get<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
        ) -> driver::Call<'a, Option<Value>> {
            self.inner.get(kind, namespace, name)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn event_messages_are_upstreams() {
        let fx = Arc::new(Messages::default());
        let clock = Arc::new(FixedClock(Mutex::new(t(0))));
        let events = Arc::new(Recorder::new(
            fx.clone(),
            clock.clone(),
            "statefulset-controller",
        ));
        let c = StatefulSetController::new(Arc::new(Caches::new()), fx.clone(), clock, events);
        let set = sts(1, "nginx:1.27");
        let new = NewPod {
            pod: new_pod(&set, &set.spec.template, 0, "web-x"),
            claims: vec![claims_for(&set, 0).remove(0).1],
        };
        let mut w = Written::default();
        c.create_pods(&set, &[new], &mut w).await.unwrap();
        let victim = Victim {
            name: "web-0".into(),
            uid: "u".into(),
            note: None,
        };
        c.delete_pods(&set, &[victim], &mut w).await.unwrap();
        c.update_pod(&set, "web-0", json!({})).await.unwrap();
        assert_eq!(w.pods, ["web-0"]);
        assert_eq!(w.deleted, [("web-0".to_string(), "u".to_string())]);
        assert_eq!(w.claims[0].0, "data-web-0");
        assert_eq!(
            *fx.messages.lock().unwrap(),
            [
                "SuccessfulCreate create Claim data-web-0 Pod web-0 in StatefulSet web success",
                "SuccessfulCreate create Pod web-0 in StatefulSet web successful",
                "SuccessfulDelete delete Pod web-0 in StatefulSet web successful",
                "SuccessfulUpdate update Pod web-0 in StatefulSet web successful",
            ]
        );
        // A refused pod: FailedCreate with the API's message.
        *fx.inner.fail_creates_after.lock().unwrap() = Some(0);
        let new = NewPod {
            pod: new_pod(&set, &set.spec.template, 1, "web-x"),
            claims: vec![],
        };
        assert!(c.create_pods(&set, &[new], &mut w).await.is_err());
        assert_eq!(
            fx.messages.lock().unwrap().last().unwrap(),
            "FailedCreate create Pod web-1 in StatefulSet web failed error: refused"
        );
    }
}
