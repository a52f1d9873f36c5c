//! The Deployment controller: one ReplicaSet per pod template (`<deployment>-<hash>`,
//! labelled `pod-template-hash`), rolled over by RollingUpdate (maxSurge/maxUnavailable)
//! or Recreate, with revisions kubectl's `rollout history|undo` read, pause, cleanup of
//! old ReplicaSets, and the status and conditions `kubectl rollout status` waits on.
//!
//! [`reconcile`] follows upstream's sync step by step on working copies of the
//! ReplicaSets and returns the writes as [`Action`]s; [`DeploymentController`] feeds it
//! and carries them out. kubectl does `rollout undo` itself (it patches the template back
//! from the chosen ReplicaSet); this controller then finds that ReplicaSet again as the
//! new one and gives it the next revision.

use super::driver::{
    self, controller_of, controller_ref, Caches, Clock, Effects, Key, Kind, LabelMatcher, Next,
    Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The revision of a ReplicaSet (and of the Deployment: its newest).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (it is reused when a rollout goes back to it).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells the ReplicaSets of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

const WAIT_FOR_CACHE: Duration = Duration::from_secs(10);

/// One write a sync makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Patch a ReplicaSet's ownerReferences (adopt or release; merge patch).
    Claim {
        /// The ReplicaSet.
        name: String,
        /// The merge patch.
        patch: Value,
    },
    /// Create the new ReplicaSet.
    Create {
        /// The object.
        rs: Box<ReplicaSet>,
        /// The ScalingReplicaSet event, if it starts with replicas.
        event: Option<String>,
    },
    /// Change a ReplicaSet's replicas, annotations or minReadySeconds (merge patch).
    Update {
        /// The ReplicaSet.
        name: String,
        /// The merge patch (preconditioned on the resourceVersion decided on).
        patch: Value,
        /// The ScalingReplicaSet event, if the size changed.
        event: Option<String>,
    },
    /// Delete an old ReplicaSet beyond revisionHistoryLimit.
    Delete {
        /// The ReplicaSet.
        name: String,
        /// Its uid (precondition).
        uid: String,
    },
    /// Write the Deployment's status.
    Status(Box<DeploymentStatus>),
    /// Set the Deployment's revision annotation.
    Revision(String),
    /// Look again after this long (the progress deadline).
    Requeue(Duration),
}

/// Resolves an absolute or percent value against `total`, rounding as asked.
pub fn scaled(v: Option<&IntOrString>, default_percent: i32, total: i32, round_up: bool) -> i32 {
    let percent = match v {
        Some(IntOrString::Int(n)) => return *n,
        Some(IntOrString::String(s)) => s.trim_end_matches('%').parse::<i32>().unwrap_or(0),
        None => default_percent,
    };
    let x = i64::from(percent) * i64::from(total);
    let r = if round_up {
        (x + 99).div_euclid(100)
    } else {
        x.div_euclid(100)
    };
    i32::try_from(r).unwrap_or(i32::MAX)
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// maxSurge and maxUnavailable as numbers (surge rounds up, unavailable down; both zero
/// would stall a rollout, so unavailable becomes 1).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let n = replicas(d);
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), 25, n, true);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), 25, n, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// How many pods above `replicas` a rollout may run.
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) {
        fenceposts(d).0
    } else {
        0
    }
}

/// How many of `replicas` may be unavailable during a rollout.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(HASH_LABEL);
            if l.is_empty() {
                m.labels = None;
            }
        }
    }
    t
}

/// Whether two templates are the same but for `pod-template-hash`.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The `pod-template-hash` of a template: FNV-1a over its JSON (and the collision
/// count), written with upstream's alphabet of safe characters.
pub fn template_hash(t: &PodTemplateSpec, collisions: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(serde_json::to_string(t).unwrap_or_default().as_bytes());
    if let Some(c) = collisions {
        eat(&c.to_le_bytes());
    }
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| char::from(SAFE[usize::from(d) % SAFE.len()]))
        .collect()
}

fn condition<'a>(conds: &'a [DeploymentCondition], type_: &str) -> Option<&'a DeploymentCondition> {
    conds.iter().find(|c| c.type_.as_deref() == Some(type_))
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's SetDeploymentCondition: the same status and reason change nothing; the
/// same status keeps its transition time.
fn set_condition(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(old) = condition(conds, c.type_.as_deref().unwrap_or("")) {
        if old.status == c.status && old.reason == c.reason {
            return;
        }
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    conds.retain(|o| o.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(conds: &mut Vec<DeploymentCondition>, type_: &str) {
    conds.retain(|c| c.type_.as_deref() != Some(type_));
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// What a Deployment sync sees.
pub struct Observed<'a> {
    /// The ReplicaSets of the Deployment's namespace.
    pub replicasets: &'a [Arc<ReplicaSet>],
    /// The pods of the Deployment's namespace (Recreate waits for old ones to go).
    pub pods: &'a [Arc<Pod>],
    /// Now.
    pub now: jiff::Timestamp,
}

/// One sync in progress: working copies the steps change as they decide.
struct Sync<'a> {
    d: &'a Deployment,
    now: jiff::Timestamp,
    /// The Deployment's ReplicaSets as they will be after the actions.
    sets: Vec<ReplicaSet>,
    /// Index of the new ReplicaSet in `sets`.
    new: Option<usize>,
    conditions: Vec<DeploymentCondition>,
    collision_count: Option<i32>,
    actions: Vec<Action>,
}

/// Decides one sync of `d`.
pub fn reconcile(d: &Deployment, observed: &Observed<'_>) -> Vec<Action> {
    let mut s = Sync {
        d,
        now: observed.now,
        sets: Vec::new(),
        new: None,
        conditions: d
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default(),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        actions: Vec::new(),
    };
    s.claim(observed.replicasets);
    if d.metadata.deletion_timestamp.is_some() {
        s.find_new(false);
        s.sync_status();
        return s.actions;
    }
    s.paused_conditions();
    let paused = d.spec.paused == Some(true);
    if paused || s.is_scaling_event() {
        s.find_new(false);
        s.scale();
        if paused {
            s.cleanup();
        }
        s.sync_status();
    } else if is_rolling(d) {
        s.rolling();
    } else {
        s.recreate(observed.pods);
    }
    // The status goes first: the revision annotation changes the resourceVersion the
    // status write is preconditioned on.
    s.actions
        .sort_by_key(|a| matches!(a, Action::Revision(_) | Action::Requeue(_)));
    s.actions
}

impl Sync<'_> {
    fn uid(&self) -> &str {
        self.d.metadata.uid.as_deref().unwrap_or("")
    }

    fn claim(&mut self, all: &[Arc<ReplicaSet>]) {
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let selector = LabelMatcher::new(Some(&self.d.spec.selector));
        let uid = self.uid().to_string();
        for rs in all {
            let matches = selector.matches(rs.metadata.labels.as_ref());
            let refs = || {
                rs.owner_references()
                    .iter()
                    .map(|o| json!(o))
                    .collect::<Vec<_>>()
            };
            let patch = |refs: Vec<Value>| json!({"metadata": {"resourceVersion": rs.metadata.resource_version, "ownerReferences": refs}});
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        self.sets.push((**rs).clone());
                    } else if !deleting {
                        let kept = rs
                            .owner_references()
                            .iter()
                            .filter(|o| o.uid != uid)
                            .map(|o| json!(o))
                            .collect();
                        self.actions.push(Action::Claim {
                            name: rs.name_any(),
                            patch: patch(kept),
                        });
                    }
                }
                Some(_) => {}
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    let mut r = refs();
                    r.push(json!(controller_ref(self.d)));
                    self.actions.push(Action::Claim {
                        name: rs.name_any(),
                        patch: patch(r),
                    });
                    self.sets.push((**rs).clone());
                }
                None => {}
            }
        }
        // Oldest first, as upstream sorts them.
        self.sets.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                a.name_any(),
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    b.name_any(),
                ))
        });
    }

    fn old(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.sets.len()).filter(move |i| Some(*i) != self.new)
    }

    fn has_deadline(&self) -> bool {
        self.d
            .spec
            .progress_deadline_seconds
            .is_some_and(|s| s != i32::MAX)
    }

    fn set_revision(&mut self, revision: String) {
        if annotation(&self.d.metadata, REVISION) != Some(revision.as_str()) {
            self.actions.retain(|a| !matches!(a, Action::Revision(_)));
            self.actions.push(Action::Revision(revision));
        }
    }

    /// Copies the Deployment's annotations and the revision onto a ReplicaSet; says
    /// whether anything changed.
    fn annotate_new(&self, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
        let mut changed = false;
        let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in self.d.annotations() {
            if NOT_COPIED.contains(&k.as_str()) || ann.get(k) == Some(v) {
                continue;
            }
            ann.insert(k.clone(), v.clone());
            changed = true;
        }
        let old = ann.get(REVISION).cloned().unwrap_or_default();
        if old.parse::<i64>().unwrap_or(0) < new_revision {
            ann.insert(REVISION.into(), new_revision.to_string());
            if !old.is_empty() {
                let history = match ann.get(REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => format!("{h},{old}"),
                    _ => old,
                };
                ann.insert(REVISION_HISTORY.into(), history);
            }
            changed = true;
        }
        if !exists {
            let n = replicas(self.d);
            ann.insert(DESIRED_REPLICAS.into(), n.to_string());
            ann.insert(MAX_REPLICAS.into(), (n + max_surge(self.d)).to_string());
            changed = true;
        }
        changed
    }

    /// Upstream's getNewReplicaSet: finds the ReplicaSet of the current template (and
    /// brings its annotations up to date), or creates it when `create` says so.
    fn find_new(&mut self, create: bool) {
        let template = &self.d.spec.template;
        self.new = self.sets.iter().position(|rs| {
            rs.spec
                .template
                .as_ref()
                .is_some_and(|t| same_template(t, template))
        });
        let max_old = self
            .old()
            .map(|i| revision(&self.sets[i]))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = self.new {
            let mut rs = self.sets[i].clone();
            let annotated = self.annotate_new(&mut rs, new_revision, true);
            let min_ready = self.d.spec.min_ready_seconds;
            if annotated || rs.spec.min_ready_seconds != min_ready {
                rs.spec.min_ready_seconds = min_ready;
                self.actions.push(Action::Update {
                    name: rs.name_any(),
                    patch: json!({
                        "metadata": {"resourceVersion": rs.metadata.resource_version, "annotations": rs.metadata.annotations},
                        "spec": {"minReadySeconds": min_ready},
                    }),
                    event: None,
                });
                // The precondition above is spent; later patches of this ReplicaSet in
                // this sync go without one.
                rs.metadata.resource_version = None;
            }
            if let Some(r) = annotation(&rs.metadata, REVISION) {
                self.set_revision(r.to_string());
            }
            if self.has_deadline() && condition(&self.conditions, "Progressing").is_none() {
                let msg = format!("Found new replica set \"{}\"", rs.name_any());
                let c = new_condition("Progressing", "True", "FoundNewReplicaSet", msg, self.now);
                set_condition(&mut self.conditions, c);
            }
            self.sets[i] = rs;
            return;
        }
        if !create {
            return;
        }
        let hash = template_hash(template, self.collision_count);
        let mut tpl = template.clone();
        tpl.metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = self.d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                owner_references: Some(vec![controller_ref(self.d)]),
                labels: tpl.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.min_ready_seconds,
                selector,
                template: Some(tpl),
            },
            status: None,
        };
        self.sets.push(rs.clone());
        let i = self.sets.len() - 1;
        self.new = Some(i);
        let n = self.new_replicas(i);
        rs.spec.replicas = Some(n);
        self.annotate_new(&mut rs, new_revision, false);
        self.sets[i] = rs.clone();
        let event = (n > 0).then(|| format!("Scaled up replica set {name} from 0 to {n}"));
        self.actions.push(Action::Create {
            rs: Box::new(rs),
            event,
        });
        self.set_revision(new_revision.to_string());
        let msg = format!("Created new replica set \"{name}\"");
        let c = new_condition("Progressing", "True", "NewReplicaSetCreated", msg, self.now);
        if self.has_deadline() {
            set_condition(&mut self.conditions, c);
        }
    }

    /// Upstream's NewRSNewReplicas: how big the new ReplicaSet may be now.
    fn new_replicas(&self, new: usize) -> i32 {
        let d = self.d;
        if !is_rolling(d) {
            return replicas(d);
        }
        let current: i32 = self.sets.iter().map(spec_replicas).sum();
        let max_total = replicas(d) + max_surge(d);
        let own = spec_replicas(&self.sets[new]);
        if current >= max_total {
            return own;
        }
        let up = (max_total - current).min(replicas(d) - own).max(0);
        own + up
    }

    /// Upstream's scaleReplicaSet: new size and the replica annotations. Says whether the
    /// size changed.
    fn scale_set(&mut self, i: usize, to: i32) -> bool {
        let d = self.d;
        let (want, max) = (replicas(d), replicas(d) + max_surge(d));
        let rs = &mut self.sets[i];
        let from = spec_replicas(rs);
        let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        let stale = ann.get(DESIRED_REPLICAS) != Some(&want.to_string())
            || ann.get(MAX_REPLICAS) != Some(&max.to_string());
        if from == to && !stale {
            return false;
        }
        ann.insert(DESIRED_REPLICAS.into(), want.to_string());
        ann.insert(MAX_REPLICAS.into(), max.to_string());
        rs.spec.replicas = Some(to);
        let name = rs.name_any();
        let event = (from != to).then(|| {
            let dir = if to > from { "up" } else { "down" };
            format!("Scaled {dir} replica set {name} from {from} to {to}")
        });
        self.actions.push(Action::Update {
            name,
            patch: json!({
                "metadata": {
                    "resourceVersion": rs.metadata.resource_version,
                    "annotations": {DESIRED_REPLICAS: want.to_string(), MAX_REPLICAS: max.to_string()},
                },
                "spec": {"replicas": to},
            }),
            event,
        });
        rs.metadata.resource_version = None;
        from != to
    }

    /// scaleReplicaSetAndRecordEvent: nothing when the size is already right.
    fn scale_to(&mut self, i: usize, to: i32) -> bool {
        if spec_replicas(&self.sets[i]) == to {
            return false;
        }
        self.scale_set(i, to)
    }

    fn active(&self) -> Vec<usize> {
        (0..self.sets.len())
            .filter(|i| spec_replicas(&self.sets[*i]) > 0)
            .collect()
    }

    fn is_scaling_event(&mut self) -> bool {
        self.find_new(false);
        let want = replicas(self.d).to_string();
        self.active().into_iter().any(|i| {
            annotation(&self.sets[i].metadata, DESIRED_REPLICAS).is_some_and(|v| v != want)
        })
    }

    /// Upstream's scale: a Deployment resized mid-rollout grows or shrinks its active
    /// ReplicaSets in proportion.
    fn scale(&mut self) {
        let d = self.d;
        let want = replicas(d);
        let active = self.active();
        // One active (or none): it alone takes the size.
        let only = match active.len() {
            0 => self.new.or_else(|| self.newest_old()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = only {
            self.scale_to(i, want);
            return;
        }
        if let Some(n) = self.new {
            let rs = &self.sets[n];
            let saturated = spec_replicas(rs) == want
                && annotation(&rs.metadata, DESIRED_REPLICAS) == Some(want.to_string().as_str())
                && status_of(rs).2 == want;
            if saturated {
                for i in self.old().collect::<Vec<_>>() {
                    if spec_replicas(&self.sets[i]) > 0 {
                        self.scale_to(i, 0);
                    }
                }
                return;
            }
        }
        if !is_rolling(d) {
            return;
        }
        let total: i32 = active.iter().map(|i| spec_replicas(&self.sets[*i])).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - total;
        let mut order = active.clone();
        let key = |i: &usize| {
            let rs = &self.sets[*i];
            (
                spec_replicas(rs),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        };
        if to_add > 0 {
            // Bigger first; newer first among equals.
            order.sort_by_key(|b| std::cmp::Reverse(key(b)));
        } else {
            // Bigger first; older first among equals.
            order.sort_by(|a, b| key(b).0.cmp(&key(a).0).then(key(a).1.cmp(&key(b).1)));
        }
        let mut added = 0;
        let mut sizes: Vec<(usize, i32)> = Vec::new();
        for &i in &order {
            let own = spec_replicas(&self.sets[i]);
            let mut size = own;
            if to_add != 0 {
                let p = self.proportion(i, to_add, added);
                size += p;
                added += p;
            }
            sizes.push((i, size));
        }
        if to_add != 0 {
            if let Some(first) = sizes.first_mut() {
                first.1 = (first.1 + to_add - added).max(0);
            }
        }
        for (i, size) in sizes {
            self.scale_set(i, size);
        }
    }

    fn newest_old(&self) -> Option<usize> {
        self.old().max_by_key(|i| {
            self.sets[*i]
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
        })
    }

    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let rs = &self.sets[i];
        let own = spec_replicas(rs);
        if own == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if replicas(self.d) == 0 {
            -own
        } else {
            let total = replicas(self.d) + max_surge(self.d);
            let annotated = annotation(&rs.metadata, MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or_else(|| self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
            if annotated == 0 {
                0
            } else {
                let size = f64::from(own) * f64::from(total) / f64::from(annotated);
                size.round() as i32 - own
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn paused_conditions(&mut self) {
        if !self.has_deadline() {
            return;
        }
        let cur = condition(&self.conditions, "Progressing");
        if cur.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
            return;
        }
        let paused_cond = cur.is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"));
        let paused = self.d.spec.paused == Some(true);
        if paused && !paused_cond {
            let c = new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                self.now,
            );
            set_condition(&mut self.conditions, c);
        } else if !paused && paused_cond {
            let c = new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                self.now,
            );
            set_condition(&mut self.conditions, c);
        }
    }

    fn rolling(&mut self) {
        self.find_new(true);
        if self.reconcile_new() || self.reconcile_old() {
            self.sync_rollout_status();
            return;
        }
        if self.complete(&self.calculate_status()) {
            self.cleanup();
        }
        self.sync_rollout_status();
    }

    fn reconcile_new(&mut self) -> bool {
        let Some(n) = self.new else { return false };
        let want = replicas(self.d);
        let own = spec_replicas(&self.sets[n]);
        if own == want {
            return false;
        }
        if own > want {
            return self.scale_to(n, want);
        }
        let to = self.new_replicas(n);
        self.scale_to(n, to)
    }

    fn reconcile_old(&mut self) -> bool {
        let old: Vec<usize> = self.old().collect();
        let old_pods: i32 = old.iter().map(|i| spec_replicas(&self.sets[*i])).sum();
        if old_pods == 0 {
            return false;
        }
        let all_pods: i32 = self.sets.iter().map(spec_replicas).sum();
        let min_available = replicas(self.d) - max_unavailable(self.d);
        let new_unavailable = self.new.map_or(0, |n| {
            spec_replicas(&self.sets[n]) - status_of(&self.sets[n]).2
        });
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        // A status that has not caught up with a scale-down (more available than
        // wanted) says nothing reliable about what may go: wait for it, as upstream
        // does (it fails the sync there). Its status update brings us back.
        if old.iter().any(|&i| {
            let own = spec_replicas(&self.sets[i]);
            own > 0 && status_of(&self.sets[i]).2 > own
        }) {
            return false;
        }
        // First the old pods that are not available anyway.
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let own = spec_replicas(&self.sets[i]);
            let available = status_of(&self.sets[i]).2;
            if own == 0 || own == available {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(own - available);
            self.scale_to(i, own - down);
            cleaned += down;
        }
        // Then available ones, as far as availability allows.
        let available: i32 = self.sets.iter().map(|rs| status_of(rs).2).sum();
        let mut scaled = 0;
        if available > min_available {
            let budget = available - min_available;
            for &i in &old {
                if scaled >= budget {
                    break;
                }
                let own = spec_replicas(&self.sets[i]);
                if own == 0 {
                    continue;
                }
                let down = own.min(budget - scaled);
                self.scale_to(i, own - down);
                scaled += down;
            }
        }
        cleaned + scaled > 0
    }

    fn recreate(&mut self, pods: &[Arc<Pod>]) {
        self.find_new(false);
        let mut scaled = false;
        for i in self.old().collect::<Vec<_>>() {
            if spec_replicas(&self.sets[i]) > 0 {
                scaled |= self.scale_to(i, 0);
            }
        }
        if scaled || self.old_pods_running(pods) {
            self.sync_rollout_status();
            return;
        }
        if self.new.is_none() {
            self.find_new(true);
        }
        if let Some(n) = self.new {
            let want = replicas(self.d);
            self.scale_to(n, want);
        }
        if self.complete(&self.calculate_status()) {
            self.cleanup();
        }
        self.sync_rollout_status();
    }

    fn old_pods_running(&self, pods: &[Arc<Pod>]) -> bool {
        if self.old().any(|i| status_of(&self.sets[i]).0 > 0) {
            return true;
        }
        let old: HashSet<&str> = self
            .old()
            .filter_map(|i| self.sets[i].metadata.uid.as_deref())
            .collect();
        pods.iter().any(|p| {
            controller_of(&p.metadata).is_some_and(|r| old.contains(r.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
    }

    /// Deletes the oldest scaled-down ReplicaSets beyond revisionHistoryLimit.
    fn cleanup(&mut self) {
        let Some(limit) = self.d.spec.revision_history_limit else {
            return;
        };
        let mut old: Vec<&ReplicaSet> = self
            .old()
            .map(|i| &self.sets[i])
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let extra = old.len() as i64 - i64::from(limit);
        if extra <= 0 {
            return;
        }
        old.sort_by_key(|rs| {
            (
                revision(rs),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        let mut deletes = Vec::new();
        for rs in old.into_iter().take(extra as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if status_of(rs).0 != 0
                || spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            deletes.push(Action::Delete {
                name: rs.name_any(),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
            });
        }
        self.actions.extend(deletes);
    }

    fn calculate_status(&self) -> DeploymentStatus {
        let d = self.d;
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| self.sets.iter().map(f).sum::<i32>();
        let available = sum(&|rs| status_of(rs).2);
        let total = sum(&spec_replicas);
        let mut conditions = self.conditions.clone();
        let c = if available >= replicas(d) - max_unavailable(d) {
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        set_condition(&mut conditions, c);
        DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: nonzero(sum(&|rs| status_of(rs).0)),
            updated_replicas: nonzero(self.new.map_or(0, |n| status_of(&self.sets[n]).0)),
            ready_replicas: nonzero(sum(&|rs| status_of(rs).1)),
            available_replicas: nonzero(available),
            unavailable_replicas: nonzero((total - available).max(0)),
            collision_count: self.collision_count,
            conditions: (!conditions.is_empty()).then_some(conditions),
            terminating_replicas: None,
        }
    }

    fn complete(&self, s: &DeploymentStatus) -> bool {
        let n = replicas(self.d);
        s.updated_replicas.unwrap_or(0) == n
            && s.replicas.unwrap_or(0) == n
            && s.available_replicas.unwrap_or(0) == n
            && s.observed_generation.unwrap_or(0) >= self.d.metadata.generation.unwrap_or(0)
    }

    fn sync_status(&mut self) {
        let s = self.calculate_status();
        self.push_status(s);
    }

    fn push_status(&mut self, s: DeploymentStatus) {
        if self.d.status.as_ref() != Some(&s) {
            self.actions.push(Action::Status(Box::new(s)));
        }
    }

    fn sync_rollout_status(&mut self) {
        let mut s = self.calculate_status();
        let mut conds = s.conditions.take().unwrap_or_default();
        if !self.has_deadline() {
            remove_condition(&mut conds, "Progressing");
        }
        let cur = condition(&conds, "Progressing").cloned();
        let complete_already = s.replicas == s.updated_replicas
            && cur
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        let new_name = self.new.map(|n| self.sets[n].name_any());
        if self.has_deadline() && !complete_already {
            if self.complete(&s) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                    None => "Deployment has successfully progressed.".into(),
                };
                set_condition(
                    &mut conds,
                    new_condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        msg,
                        self.now,
                    ),
                );
            } else if self.progressing(&s) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                    None => format!("Deployment \"{}\" is progressing.", self.d.name_any()),
                };
                let mut c =
                    new_condition("Progressing", "True", "ReplicaSetUpdated", msg, self.now);
                if let Some(old) = cur.as_ref().filter(|o| o.status.as_deref() == Some("True")) {
                    c.last_transition_time = old.last_transition_time.clone();
                }
                remove_condition(&mut conds, "Progressing");
                conds.push(c);
            } else if self.timed_out(cur.as_ref()) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                    None => format!(
                        "Deployment \"{}\" has timed out progressing.",
                        self.d.name_any()
                    ),
                };
                set_condition(
                    &mut conds,
                    new_condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        msg,
                        self.now,
                    ),
                );
            }
        }
        // A ReplicaSet that cannot create its pods says so on the Deployment.
        let failure = self
            .new
            .iter()
            .chain(self.old().collect::<Vec<_>>().iter())
            .filter_map(|i| {
                self.sets[*i]
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_deref())
                    .and_then(|c| {
                        c.iter()
                            .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
                    })
            })
            .next()
            .cloned();
        match failure {
            Some(f) => {
                let c = DeploymentCondition {
                    type_: Some("ReplicaFailure".into()),
                    status: f.status,
                    reason: f.reason,
                    message: f.message,
                    last_update_time: f.last_transition_time.clone(),
                    last_transition_time: f.last_transition_time,
                };
                set_condition(&mut conds, c);
            }
            None => remove_condition(&mut conds, "ReplicaFailure"),
        }
        s.conditions = (!conds.is_empty()).then_some(conds);
        if self.d.status.as_ref() == Some(&s) {
            if let Some(after) = self.stuck_requeue(&s) {
                self.actions.push(Action::Requeue(after));
            }
            return;
        }
        self.push_status(s);
    }

    fn progressing(&self, s: &DeploymentStatus) -> bool {
        let old = self.d.status.clone().unwrap_or_default();
        let v = |x: Option<i32>| x.unwrap_or(0);
        let old_old = v(old.replicas) - v(old.updated_replicas);
        let new_old = v(s.replicas) - v(s.updated_replicas);
        v(s.updated_replicas) > v(old.updated_replicas)
            || new_old < old_old
            || v(s.ready_replicas) > v(old.ready_replicas)
            || v(s.available_replicas) > v(old.available_replicas)
    }

    fn deadline_of(&self, c: &DeploymentCondition) -> Option<jiff::Timestamp> {
        let from = c.last_update_time.as_ref()?.0;
        let secs = self.d.spec.progress_deadline_seconds.unwrap_or(600);
        Some(from + jiff::SignedDuration::from_secs(i64::from(secs)))
    }

    fn timed_out(&self, cur: Option<&DeploymentCondition>) -> bool {
        let Some(c) = cur else { return false };
        match c.reason.as_deref() {
            Some("NewReplicaSetAvailable") => false,
            Some("ProgressDeadlineExceeded") => true,
            _ => self.deadline_of(c).is_some_and(|t| t < self.now),
        }
    }

    /// When an unchanged, unfinished rollout must be looked at again to notice its
    /// deadline passing.
    fn stuck_requeue(&self, s: &DeploymentStatus) -> Option<Duration> {
        let c = condition(s.conditions.as_deref().unwrap_or_default(), "Progressing")?;
        if !self.has_deadline()
            || self.complete(s)
            || c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        {
            return None;
        }
        let at = self.deadline_of(c)?;
        let left = at.duration_since(self.now);
        if left < jiff::SignedDuration::from_secs(1) {
            return Some(Duration::ZERO);
        }
        Some(left.unsigned_abs() + Duration::from_secs(1))
    }
}

/// Registers the controller's hooks and returns its workers (5, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    DeploymentController::watch(&ctx.caches, &queue);
    let controller = DeploymentController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("deployment-controller"),
    );
    ctx.workers(controller, queue, 5)
}

/// The controller: caches in, API calls out.
pub struct DeploymentController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    events: Arc<Recorder>,
}

impl DeploymentController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(DeploymentController {
            caches,
            effects,
            clock,
            events,
        })
    }

    /// Registers the hooks that fill `queue`: Deployments, their ReplicaSets (and orphan
    /// ReplicaSets they select), and deleted pods of their ReplicaSets (Recreate waits
    /// for those).
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        caches
            .deployments
            .on_change(Box::new(move |d: &Deployment, _| {
                q.add(Key::of(&d.metadata))
            }));
        let (q, deployments) = (queue.clone(), caches.deployments.clone());
        caches
            .replicasets
            .on_change(Box::new(move |rs: &ReplicaSet, _| {
                driver::queue_controller(
                    &q,
                    &deployments,
                    "apps",
                    "Deployment",
                    &rs.metadata,
                    |d| {
                        LabelMatcher::new(Some(&d.spec.selector))
                            .matches(rs.metadata.labels.as_ref())
                    },
                );
            }));
        let (q, sets) = (queue.clone(), caches.replicasets.clone());
        caches.pods.on_change(Box::new(move |pod: &Pod, change| {
            if change != driver::Change::Deleted {
                return;
            }
            let ns = pod.namespace().unwrap_or_default();
            let Some(r) = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") else {
                return;
            };
            if let Some(rs) = sets.get(&ns, &r.name) {
                if let Some(d) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                    q.add(Key {
                        namespace: ns,
                        name: d.name.clone(),
                    });
                }
            }
        }));
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let Some(d) = self.caches.deployments.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        let sets = self.caches.replicasets.in_namespace(&key.namespace);
        let pods = if is_rolling(&d) {
            Vec::new()
        } else {
            self.caches.pods.in_namespace(&key.namespace)
        };
        let actions = reconcile(
            &d,
            &Observed {
                replicasets: &sets,
                pods: &pods,
                now: self.clock.now(),
            },
        );
        self.apply(&d, actions).await
    }

    /// Carries out `actions` in order; a conflict stops the sync (the next one decides
    /// on fresher objects).
    pub async fn apply(&self, d: &Deployment, actions: Vec<Action>) -> driver::Result<Next> {
        let ns = d.namespace().unwrap_or_default();
        let sets = Kind::replicasets();
        let me = reference(d);
        let mut next = Next::Done;
        let mut written: Vec<(String, Option<String>)> = Vec::new();
        for action in actions {
            let outcome = match action {
                Action::Claim { name, patch } => self
                    .effects
                    .merge_patch(&sets, &ns, &name, patch)
                    .await
                    .map(|_| ())
                    .map_err(|e| (e, "patch", name)),
                Action::Update { name, patch, event } => {
                    match self.effects.merge_patch(&sets, &ns, &name, patch).await {
                        Ok(v) => {
                            let rv = v
                                .pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                                .map(String::from);
                            written.push((name, rv));
                            if let Some(msg) = event {
                                self.events
                                    .record(&me, EventType::Normal, "ScalingReplicaSet", &msg)
                                    .await;
                            }
                            Ok(())
                        }
                        Err(e) => Err((e, "update", name)),
                    }
                }
                Action::Create { rs, event } => {
                    let name = rs.name_any();
                    let body = serde_json::to_value(&*rs)
                        .map_err(|e| driver::Error::Encode("ReplicaSet".into(), e))?;
                    match self.effects.create(&sets, &ns, body).await {
                        Ok(v) => {
                            let rv = v
                                .pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                                .map(String::from);
                            written.push((name, rv));
                            if let Some(msg) = event {
                                self.events
                                    .record(&me, EventType::Normal, "ScalingReplicaSet", &msg)
                                    .await;
                            }
                            Ok(())
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            return self.collided(d, &rs).await;
                        }
                        Err(e) => Err((e, "create", name)),
                    }
                }
                Action::Delete { name, uid } => match self
                    .effects
                    .delete(&sets, &ns, &name, Some(&uid), None)
                    .await
                {
                    Ok(()) | Err(kube::Error::Api(_)) => Ok(()),
                    Err(e) => Err((e, "delete", name)),
                },
                Action::Status(status) => {
                    let mut body = d.clone();
                    body.status = Some(*status);
                    let body = serde_json::to_value(&body)
                        .map_err(|e| driver::Error::Encode("Deployment".into(), e))?;
                    self.effects
                        .replace_status(&Kind::deployments(), &ns, &d.name_any(), body)
                        .await
                        .map(|_| ())
                        .map_err(|e| (e, "update status of", d.name_any()))
                }
                Action::Revision(r) => self
                    .effects
                    .merge_patch(
                        &Kind::deployments(),
                        &ns,
                        &d.name_any(),
                        json!({"metadata": {"annotations": {REVISION: r}}}),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| (e, "annotate", d.name_any())),
                Action::Requeue(after) => {
                    next = next.min(Next::After(after));
                    Ok(())
                }
            };
            match outcome {
                Ok(()) => {}
                // Someone else changed it, or it went: the watch brings us back.
                Err((kube::Error::Api(s), _, _)) if s.code == 409 || s.code == 404 => {
                    return Ok(Next::Done);
                }
                Err((e, verb, name)) => {
                    return Err(driver::api_error(verb, &sets, &ns, &name)(e));
                }
            }
        }
        // The next decision must see these writes (upstream's expectations).
        if !written.is_empty() {
            self.caches
                .replicasets
                .wait_for(
                    |c| {
                        written.iter().all(|(name, rv)| {
                            c.get(&ns, name).is_some_and(|rs| {
                                revision_number(rs.metadata.resource_version.as_deref())
                                    >= revision_number(rv.as_deref())
                            })
                        })
                    },
                    WAIT_FOR_CACHE,
                )
                .await;
        }
        Ok(next)
    }

    /// The new ReplicaSet's name is taken. Ours with the same template: fine. Anything
    /// else: a hash collision, counted in the status so the next hash differs.
    async fn collided(&self, d: &Deployment, rs: &ReplicaSet) -> driver::Result<Next> {
        let ns = d.namespace().unwrap_or_default();
        if let Some(existing) = self.caches.replicasets.get(&ns, &rs.name_any()) {
            let ours = controller_of(&existing.metadata)
                .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
            let same = existing
                .spec
                .template
                .as_ref()
                .is_some_and(|t| same_template(t, &d.spec.template));
            if ours && same {
                return Ok(Next::Done);
            }
        }
        let mut body = d.clone();
        let status = body.status.get_or_insert_with(Default::default);
        status.collision_count = Some(status.collision_count.unwrap_or(0).saturating_add(1));
        let body = serde_json::to_value(&body)
            .map_err(|e| driver::Error::Encode("Deployment".into(), e))?;
        match self
            .effects
            .replace_status(&Kind::deployments(), &ns, &d.name_any(), body)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(Next::After(Duration::from_millis(100))),
            Err(e) => Err(driver::api_error(
                "update status of",
                &Kind::deployments(),
                &ns,
                &d.name_any(),
            )(e)),
        }
    }
}

fn revision_number(rv: Option<&str>) -> u64 {
    rv.and_then(|r| r.parse().ok()).unwrap_or(0)
}

impl Reconciler for DeploymentController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "deployment"
    }

    fn sync<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

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
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn deployment(n: i32, image: &str, strategy: DeploymentStrategy) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(2),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(n),
                selector: LabelSelector {
                    match_labels: labels(&[("app", "web")]),
                    ..Default::default()
                },
                template: template(image),
                strategy: Some(strategy),
                revision_history_limit: Some(10),
                progress_deadline_seconds: Some(600),
                ..Default::default()
            },
            status: None,
        }
    }

    fn rolling(surge: i32, unavailable: i32) -> DeploymentStrategy {
        DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(surge)),
                max_unavailable: Some(IntOrString::Int(unavailable)),
            }),
        }
    }

    /// A ReplicaSet of `d` for `image`, `n` replicas all available, at `revision`.
    fn old_set(d: &Deployment, image: &str, n: i32, rev: i64, created: i64) -> ReplicaSet {
        let tpl = template(image);
        let hash = template_hash(&tpl, None);
        let mut tpl = tpl;
        tpl.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), hash.clone());
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("web-{hash}")),
                namespace: Some("default".into()),
                uid: Some(format!("rs-{hash}")),
                labels: tpl.metadata.as_ref().unwrap().labels.clone(),
                owner_references: Some(vec![controller_ref(d)]),
                creation_timestamp: Some(Time(t(created))),
                annotations: Some(BTreeMap::from([
                    (REVISION.to_string(), rev.to_string()),
                    (DESIRED_REPLICAS.to_string(), replicas(d).to_string()),
                    (
                        MAX_REPLICAS.to_string(),
                        (replicas(d) + max_surge(d)).to_string(),
                    ),
                ])),
                resource_version: Some("5".into()),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(n),
                selector: LabelSelector {
                    match_labels: labels(&[("app", "web"), (HASH_LABEL, &hash)]),
                    ..Default::default()
                },
                template: Some(tpl),
                min_ready_seconds: None,
            },
            status: Some(ReplicaSetStatus {
                replicas: n,
                ready_replicas: Some(n),
                available_replicas: Some(n),
                ..Default::default()
            }),
        }
    }

    /// A toy cluster: applies actions to the objects; pods created in one round become
    /// available in the next; scale-downs take effect at once.
    struct World {
        d: Deployment,
        sets: Vec<ReplicaSet>,
        events: Vec<String>,
        now: i64,
    }

    impl World {
        fn step(&mut self) -> Vec<Action> {
            let arcs: Vec<Arc<ReplicaSet>> = self.sets.iter().cloned().map(Arc::new).collect();
            let actions = reconcile(
                &self.d,
                &Observed {
                    replicasets: &arcs,
                    pods: &[],
                    now: t(self.now),
                },
            );
            for a in &actions {
                match a.clone() {
                    Action::Create { rs, event } => {
                        let mut rs = *rs;
                        rs.metadata.uid = Some(format!("uid-{}", rs.name_any()));
                        rs.metadata.creation_timestamp = Some(Time(t(self.now)));
                        self.sets.push(rs);
                        self.events.extend(event);
                    }
                    Action::Update { name, patch, event } => {
                        let rs = self.sets.iter_mut().find(|r| r.name_any() == name).unwrap();
                        if let Some(n) = patch.pointer("/spec/replicas").and_then(Value::as_i64) {
                            rs.spec.replicas = Some(n as i32);
                            // Scale-downs remove pods at once.
                            let st = rs.status.get_or_insert_with(Default::default);
                            st.replicas = st.replicas.min(n as i32);
                            st.available_replicas = st.available_replicas.map(|a| a.min(n as i32));
                            st.ready_replicas = st.available_replicas;
                        }
                        if let Some(Value::Object(a)) = patch.pointer("/metadata/annotations") {
                            let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
                            for (k, v) in a {
                                ann.insert(k.clone(), v.as_str().unwrap().to_string());
                            }
                        }
                        self.events.extend(event);
                    }
                    Action::Status(s) => self.d.status = Some(*s),
                    Action::Revision(r) => {
                        self.d
                            .metadata
                            .annotations
                            .get_or_insert_with(Default::default)
                            .insert(REVISION.into(), r);
                    }
                    Action::Delete { name, .. } => self.sets.retain(|r| r.name_any() != name),
                    Action::Claim { .. } | Action::Requeue(_) => {}
                }
            }
            actions
        }

        fn available(&self) -> i32 {
            self.sets.iter().map(|rs| status_of(rs).2).sum()
        }

        fn total(&self) -> i32 {
            self.sets.iter().map(spec_replicas).sum()
        }

        /// The ReplicaSets' pods catch up: created pods exist and turn available.
        fn settle(&mut self) {
            self.now += 10;
            for rs in &mut self.sets {
                let n = spec_replicas(rs);
                let st = rs.status.get_or_insert_with(Default::default);
                let avail = st.replicas.min(n);
                st.available_replicas = Some(avail);
                st.ready_replicas = Some(avail);
                st.replicas = n;
                st.observed_generation = rs.metadata.generation;
            }
        }

        fn done(&self) -> bool {
            let s = self.d.status.clone().unwrap_or_default();
            let n = replicas(&self.d);
            s.updated_replicas == Some(n)
                && s.available_replicas == Some(n)
                && s.replicas == Some(n)
                && condition(s.conditions.as_deref().unwrap_or_default(), "Progressing")
                    .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"))
        }
    }

    fn roll(surge: i32, unavailable: i32, check: impl Fn(&World)) -> World {
        let d = deployment(3, "v2", rolling(surge, unavailable));
        let old = old_set(&d, "v1", 3, 1, 0);
        let mut w = World {
            d,
            sets: vec![old],
            events: Vec::new(),
            now: 100,
        };
        for _ in 0..40 {
            w.step();
            check(&w);
            if w.done() {
                return w;
            }
            w.settle();
            check(&w);
        }
        panic!("rollout did not finish: {:#?}", w.d.status);
    }

    #[test]
    fn rolling_update_with_surge_never_drops_below_the_replicas_available() {
        let w = roll(1, 0, |w| {
            assert!(
                w.available() >= 3,
                "available {} at {:?}",
                w.available(),
                w.events
            );
            assert!(w.total() <= 4, "total {}", w.total());
        });
        let new = w.sets.iter().find(|r| revision(r) == 2).unwrap();
        assert_eq!(spec_replicas(new), 3);
        assert!(new.name_any().starts_with("web-"));
        assert_eq!(
            new.metadata.labels.as_ref().unwrap()[HASH_LABEL],
            new.name_any()[4..]
        );
        assert_eq!(annotation(&w.d.metadata, REVISION), Some("2"));
        let old = w.sets.iter().find(|r| revision(r) == 1).unwrap();
        assert_eq!(spec_replicas(old), 0);
        assert_eq!(
            w.events[0],
            format!("Scaled up replica set {} from 0 to 1", new.name_any())
        );
        assert!(w.events.contains(&format!(
            "Scaled down replica set {} from 3 to 2",
            old.name_any()
        )));
        let s = w.d.status.unwrap();
        assert_eq!(s.observed_generation, Some(2));
        let conds = s.conditions.unwrap();
        let avail = condition(&conds, "Available").unwrap();
        assert_eq!(avail.reason.as_deref(), Some("MinimumReplicasAvailable"));
    }

    #[test]
    fn rolling_update_without_surge_stays_within_max_unavailable() {
        roll(0, 1, |w| {
            assert!(w.available() >= 2, "available {}", w.available());
            assert!(w.total() <= 3, "total {}", w.total());
        });
    }

    #[test]
    fn a_stale_status_of_an_old_set_never_scales_it_back_up() {
        // The old set was scaled down to 1 but its status still counts 3 available
        // pods; the new set has 4, 3 of them available.
        let d = deployment(4, "v2", rolling(1, 1));
        let mut old = old_set(&d, "v1", 1, 1, 0);
        old.status = Some(ReplicaSetStatus {
            replicas: 3,
            ready_replicas: Some(3),
            available_replicas: Some(3),
            ..Default::default()
        });
        let mut new = old_set(&d, "v2", 4, 2, 10);
        new.status = Some(ReplicaSetStatus {
            replicas: 4,
            ready_replicas: Some(3),
            available_replicas: Some(3),
            ..Default::default()
        });
        let old_name = old.name_any();
        let mut w = World {
            d,
            sets: vec![old, new],
            events: Vec::new(),
            now: 100,
        };
        let actions = w.step();
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Update { name, .. } if *name == old_name)),
            "{actions:?}"
        );
        assert_eq!(spec_replicas(&w.sets[0]), 1, "{:?}", w.events);
        // Once its status catches up, it goes on down.
        w.settle();
        w.step();
        assert_eq!(spec_replicas(&w.sets[0]), 0, "{:?}", w.events);
    }

    #[test]
    fn recreate_removes_old_pods_before_creating_new_ones() {
        let recreate = DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        };
        let d = deployment(2, "v2", recreate);
        let old = old_set(&d, "v1", 2, 1, 0);
        let mut w = World {
            d,
            sets: vec![old],
            events: Vec::new(),
            now: 100,
        };
        w.step();
        assert_eq!(w.sets.len(), 1, "no new ReplicaSet while old pods run");
        assert_eq!(spec_replicas(&w.sets[0]), 0);
        w.settle();
        w.step();
        assert_eq!(w.sets.len(), 2);
        assert_eq!(spec_replicas(&w.sets[1]), 2);
        assert!(w.events[1].ends_with("from 0 to 2"), "{:?}", w.events);
    }

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let pct = |s: &str, u: &str| DeploymentStrategy {
            type_: None,
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String(s.into())),
                max_unavailable: Some(IntOrString::String(u.into())),
            }),
        };
        let d = deployment(10, "v", pct("25%", "25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        let d = deployment(3, "v", pct("0%", "10%"));
        assert_eq!(
            (max_surge(&d), max_unavailable(&d)),
            (0, 1),
            "both zero: one may be unavailable"
        );
        let d = deployment(1, "v", rolling(0, 5));
        assert_eq!(max_unavailable(&d), 1);
        let d = deployment(4, "v", DeploymentStrategy::default());
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 1));
    }

    #[test]
    fn resizing_mid_rollout_scales_active_sets_in_proportion() {
        let mut d = deployment(20, "v2", rolling(3, 2));
        let mut old = old_set(&d, "v1", 8, 1, 0);
        let mut new = old_set(&d, "v2", 5, 2, 50);
        // Both were sized for a Deployment of 10 (max 13).
        for rs in [&mut old, &mut new] {
            let ann = rs.metadata.annotations.as_mut().unwrap();
            ann.insert(DESIRED_REPLICAS.into(), "10".into());
            ann.insert(MAX_REPLICAS.into(), "13".into());
        }
        d.status = Some(DeploymentStatus {
            replicas: Some(13),
            ..Default::default()
        });
        let mut w = World {
            d,
            sets: vec![old, new],
            events: Vec::new(),
            now: 100,
        };
        w.step();
        // 23 allowed: 8*23/13 ≈ 14, 5*23/13 ≈ 9.
        assert_eq!(spec_replicas(&w.sets[0]), 14, "{:?}", w.events);
        assert_eq!(spec_replicas(&w.sets[1]), 9, "{:?}", w.events);
        assert_eq!(w.total(), 23);
    }

    #[test]
    fn paused_deployments_do_not_roll_and_say_so() {
        let mut d = deployment(3, "v2", rolling(1, 0));
        d.spec.paused = Some(true);
        let old = old_set(&d, "v1", 3, 1, 0);
        let mut w = World {
            d,
            sets: vec![old],
            events: Vec::new(),
            now: 100,
        };
        w.step();
        assert_eq!(w.sets.len(), 1);
        let conds = w.d.status.clone().unwrap().conditions.unwrap();
        let p = condition(&conds, "Progressing").unwrap();
        assert_eq!(
            (p.status.as_deref(), p.reason.as_deref()),
            (Some("Unknown"), Some("DeploymentPaused"))
        );
        w.d.spec.paused = Some(false);
        w.step();
        assert_eq!(w.sets.len(), 2, "resumed: the rollout starts");
    }

    #[test]
    fn old_sets_beyond_the_history_limit_are_deleted_oldest_revision_first() {
        let mut d = deployment(1, "v9", rolling(1, 0));
        d.spec.revision_history_limit = Some(1);
        let mut sets: Vec<ReplicaSet> = (1..=3)
            .map(|r| old_set(&d, &format!("v{r}"), 0, r, r))
            .collect();
        sets.push(old_set(&d, "v9", 1, 4, 10));
        let mut w = World {
            d,
            sets,
            events: Vec::new(),
            now: 100,
        };
        let actions = w.step();
        let deleted: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        let name = |v: &str| format!("web-{}", template_hash(&template(v), None));
        assert_eq!(deleted, [name("v1"), name("v2")]);
    }

    #[test]
    fn going_back_to_an_old_template_reuses_its_set_with_the_next_revision() {
        // kubectl rollout undo put v1's template back; v2 is revision 2.
        let d = deployment(2, "v1", rolling(1, 0));
        let v1 = old_set(&d, "v1", 0, 1, 0);
        let v2 = old_set(&d, "v2", 2, 2, 10);
        let mut w = World {
            d,
            sets: vec![v1, v2],
            events: Vec::new(),
            now: 100,
        };
        let actions = w.step();
        let ann = w.sets[0].metadata.annotations.clone().unwrap();
        assert_eq!(ann[REVISION], "3", "{actions:?}");
        assert_eq!(ann[REVISION_HISTORY], "1");
        assert_eq!(annotation(&w.d.metadata, REVISION), Some("3"));
        assert_eq!(spec_replicas(&w.sets[0]), 1, "scales up within maxSurge");
    }

    #[test]
    fn a_rollout_without_progress_times_out() {
        let mut d = deployment(1, "v2", rolling(1, 0));
        d.spec.progress_deadline_seconds = Some(60);
        let old = old_set(&d, "v1", 0, 1, 0);
        let mut new = old_set(&d, "v2", 1, 2, 0);
        new.status = Some(ReplicaSetStatus {
            replicas: 1,
            ..Default::default()
        });
        let mut w = World {
            d,
            sets: vec![old, new],
            events: Vec::new(),
            now: 0,
        };
        w.step();
        w.step(); // nothing changed: asks to look again at the deadline
        let again = w.step();
        assert!(
            again
                .iter()
                .any(|a| matches!(a, Action::Requeue(d) if *d <= Duration::from_secs(61))),
            "{again:?}"
        );
        w.now = 100;
        w.step();
        let conds = w.d.status.clone().unwrap().conditions.unwrap();
        let p = condition(&conds, "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some("ProgressDeadlineExceeded"));
        assert_eq!(
            p.message.as_deref(),
            Some(
                format!(
                    "ReplicaSet \"{}\" has timed out progressing.",
                    w.sets[1].name_any()
                )
                .as_str()
            )
        );
        let a = condition(&conds, "Available").unwrap();
        assert_eq!(a.reason.as_deref(), Some("MinimumReplicasUnavailable"));
    }

    #[test]
    fn hashes_use_the_safe_alphabet_and_change_with_collisions() {
        let h = template_hash(&template("v1"), None);
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)) && !h.is_empty());
        assert_eq!(h, template_hash(&template("v1"), None));
        assert_ne!(h, template_hash(&template("v1"), Some(1)));
        let mut with = template("v1");
        with.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), h);
        assert!(same_template(&with, &template("v1")));
    }
}
