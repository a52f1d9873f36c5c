//! The disruption controller: keeps each PodDisruptionBudget's status current, so the
//! eviction subresource (and with it `kubectl drain`) knows how many pods may go.
//!
//! For a budget, upstream counts the pods its selector picks in its namespace: how many
//! are expected (`expectedPods`: the pod count for an integer `minAvailable`, else the
//! sum of the `spec.replicas` of the pods' controllers), how many must stay healthy
//! (`desiredHealthy`, from `minAvailable` or `maxUnavailable`, percentages rounded up),
//! how many are (`currentHealthy`: Ready, not being deleted, not just evicted), and so
//! `disruptionsAllowed`, with the `DisruptionAllowed` condition (SufficientPods or
//! InsufficientPods). Evictions the API granted but that have not turned into a deletion
//! yet stay in `disruptedPods` for up to [`DELETION_TIMEOUT`].
//!
//! [`reconcile`] decides from plain values; [`DisruptionController`] feeds it from the
//! shared caches and writes the status subresource (preconditioned on the version read,
//! so an eviction granted meanwhile is never overwritten).

use super::driver::{
    self, controller_of, Caches, Clock, Effects, Key, Kind, LabelMatcher, Next, Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How long a granted eviction may take to become a deletion before the pod counts as
/// healthy again (upstream's DeletionTimeout).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The condition type the controller keeps.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    /// The budget itself.
    Budget,
    /// A pod of the budget's namespace, by name.
    Pod(String),
}

/// An Event a sync records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What it is about.
    pub about: About,
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// What one sync decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The status the budget should have.
    pub status: PodDisruptionBudgetStatus,
    /// Events to record.
    pub notes: Vec<Note>,
    /// When to look again even if nothing changes (a granted eviction times out).
    pub recheck: Option<Timestamp>,
}

/// Finds the scale of a pod's controller: its uid and `spec.replicas`, or `None` when it
/// is not a controller whose scale is known.
pub type ScaleOf<'a> = &'a dyn Fn(&str, &OwnerReference) -> Option<(String, i32)>;

/// Whether a pod's Ready condition is True (upstream's health test for budgets).
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// `value` (an integer or a percentage of `total`, rounded up) as upstream's
/// `GetScaledValueFromIntOrPercent` with rounding up.
pub fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let number = s
                .strip_suffix('%')
                .ok_or_else(|| {
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .to_string()
                })?
                .parse::<i64>()
                .map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let v = (number as f64 * f64::from(total) / 100.0).ceil();
            Ok(v.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32)
        }
    }
}

/// The sum of the scales of the selected pods' controllers, and the pods without one.
fn expected_scale(
    namespace: &str,
    pods: &[&Pod],
    scale_of: ScaleOf<'_>,
) -> Result<(i32, Vec<String>), String> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let Some(owner) = controller_of(&pod.metadata) else {
            unmanaged.push(pod.name_any());
            continue;
        };
        match scale_of(namespace, owner) {
            Some((uid, replicas)) => {
                scales.insert(uid, replicas);
            }
            None => return Err(format!("found no controllers for pod {:?}", pod.name_any())),
        }
    }
    let total = scales.values().map(|n| i64::from(*n)).sum::<i64>();
    Ok((i32::try_from(total).unwrap_or(i32::MAX), unmanaged))
}

/// Go's rendering of a label selector (`%v` of upstream's type), as upstream's
/// UnmanagedPods event prints it.
fn go_selector(s: Option<&LabelSelector>) -> String {
    let Some(s) = s else {
        return "nil".into();
    };
    let labels: String = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let exprs: String = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e.key,
                e.operator,
                e.values.as_deref().unwrap_or_default().join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},\
         MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}"
    )
}

/// Sets `cond` among `conditions` as upstream's `SetStatusCondition`: the transition
/// time moves only when the status does.
fn set_condition(conditions: &mut Vec<Condition>, cond: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        None => conditions.push(cond),
        Some(old) => {
            if old.status != cond.status {
                old.status = cond.status;
                old.last_transition_time = cond.last_transition_time;
            }
            old.reason = cond.reason;
            old.message = cond.message;
            old.observed_generation = cond.observed_generation;
        }
    }
}

fn allowed_condition(allowed: i32, generation: Option<i64>, now: Timestamp) -> Condition {
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The status as upstream's fail-safe leaves it when a sync cannot be computed: no
/// disruption allowed, and why.
fn fail_safe(pdb: &PodDisruptionBudget, why: &str, now: Timestamp) -> PodDisruptionBudgetStatus {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = Some(0);
    let generation = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    set_condition(
        conditions,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: "False".into(),
            reason: "SyncFailed".into(),
            message: why.to_string(),
            observed_generation: generation,
            last_transition_time: Time(now),
        },
    );
    status
}

/// Decides the status of `pdb` from the `pods` of its namespace at `now`.
pub fn reconcile(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale_of: ScaleOf<'_>,
    now: Timestamp,
) -> Outcome {
    let namespace = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.as_ref();
    let selector = LabelMatcher::new(spec.and_then(|s| s.selector.as_ref()));
    let selected: Vec<&Pod> = pods
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or("") == namespace)
        .filter(|p| selector.matches(p.metadata.labels.as_ref()))
        .collect();
    let mut notes = Vec::new();
    let note = |about, type_, reason, message| Note {
        about,
        type_,
        reason,
        message,
    };
    if selected.is_empty() {
        notes.push(note(
            About::Budget,
            EventType::Normal,
            "NoPods",
            "No matching pods found".into(),
        ));
    }

    let pod_count = i32::try_from(selected.len()).unwrap_or(i32::MAX);
    let counted: Result<(i32, i32, Vec<String>), String> = (|| {
        let max_unavailable = spec.and_then(|s| s.max_unavailable.as_ref());
        let min_available = spec.and_then(|s| s.min_available.as_ref());
        if let Some(mu) = max_unavailable {
            let (expected, unmanaged) = expected_scale(&namespace, &selected, scale_of)?;
            let desired = (expected - scaled(mu, expected)?).max(0);
            Ok((expected, desired, unmanaged))
        } else if let Some(IntOrString::Int(n)) = min_available {
            Ok((pod_count, *n, Vec::new()))
        } else if let Some(ma) = min_available {
            let (expected, unmanaged) = expected_scale(&namespace, &selected, scale_of)?;
            Ok((expected, scaled(ma, expected)?, unmanaged))
        } else {
            Ok((0, 0, Vec::new()))
        }
    })();
    let (expected, desired, unmanaged) = match counted {
        Ok(c) => c,
        Err(why) => {
            let message = format!("Failed to calculate the number of expected pods: {why}");
            notes.push(note(
                About::Budget,
                EventType::Warning,
                "CalculateExpectedPodCountFailed",
                message,
            ));
            return Outcome {
                status: fail_safe(pdb, &why, now),
                notes,
                recheck: None,
            };
        }
    };
    if !unmanaged.is_empty() {
        notes.push(note(
            About::Budget,
            EventType::Warning,
            "UnmanagedPods",
            format!(
                "Pods selected by this PodDisruptionBudget (selector: {}) were found to be \
                 unmanaged. As a result, the status of the PDB cannot be calculated correctly, \
                 which may result in undefined behavior. To account for these pods please set \
                 \".spec.minAvailable\" field of the PDB to an integer value.",
                go_selector(spec.and_then(|s| s.selector.as_ref()))
            ),
        ));
    }

    // Granted evictions that have not become deletions yet, until they time out.
    let timeout = SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or(SignedDuration::MAX);
    let granted = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    for pod in &selected {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(at) = granted.get(&name) else {
            continue;
        };
        let expires = at.0.checked_add(timeout).unwrap_or(Timestamp::MAX);
        if expires < now {
            notes.push(note(
                About::Pod(name),
                EventType::Warning,
                "NotDeleted",
                format!(
                    "Pod was expected by PDB {namespace}/{} to be deleted but it wasn't",
                    pdb.name_any()
                ),
            ));
        } else {
            recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
            disrupted.insert(name, at.clone());
        }
    }

    let healthy = selected
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| is_ready(p))
        .count();
    let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let mut allowed = healthy - desired;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }

    let generation = pdb.metadata.generation;
    let mut conditions = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    set_condition(&mut conditions, allowed_condition(allowed, generation, now));
    Outcome {
        status: PodDisruptionBudgetStatus {
            current_healthy: Some(healthy),
            desired_healthy: Some(desired),
            expected_pods: Some(expected),
            disruptions_allowed: Some(allowed),
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            observed_generation: generation,
            conditions: Some(conditions),
        },
        notes,
        recheck,
    }
}

/// `status` with empty parts as the API leaves them, so equal statuses compare equal.
fn normalized(status: Option<&PodDisruptionBudgetStatus>) -> PodDisruptionBudgetStatus {
    let mut s = status.cloned().unwrap_or_default();
    if s.disrupted_pods.as_ref().is_some_and(BTreeMap::is_empty) {
        s.disrupted_pods = None;
    }
    if s.conditions.as_ref().is_some_and(Vec::is_empty) {
        s.conditions = None;
    }
    for n in [
        &mut s.current_healthy,
        &mut s.desired_healthy,
        &mut s.expected_pods,
        &mut s.disruptions_allowed,
    ] {
        n.get_or_insert(0);
    }
    s
}

/// Registers the controller's hooks and returns its workers.
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    DisruptionController::watch(&ctx.caches, &queue);
    let controller = DisruptionController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("controllermanager"),
    );
    ctx.workers(controller, queue, 2)
}

/// The controller: caches in, API calls out.
pub struct DisruptionController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    events: Arc<Recorder>,
}

impl DisruptionController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(DisruptionController {
            caches,
            effects,
            clock,
            events,
        })
    }

    /// Registers the cache hooks that fill `queue`: a budget's own changes, and the
    /// changes of every pod it selects.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        caches
            .pdbs
            .on_change(Box::new(move |pdb: &PodDisruptionBudget, _| {
                q.add(Key::of(&pdb.metadata))
            }));
        let (q, pdbs) = (queue.clone(), caches.pdbs.clone());
        caches.pods.on_change(Box::new(move |pod: &Pod, _| {
            let ns = pod.namespace().unwrap_or_default();
            for pdb in pdbs.in_namespace(&ns) {
                let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
                if LabelMatcher::new(selector).matches(pod.metadata.labels.as_ref()) {
                    q.add(Key::of(&pdb.metadata));
                }
            }
        }));
    }

    /// The scale of a pod's controller, as upstream's finders look it up: a
    /// ReplicaSet's own, or its Deployment's when a Deployment controls it, or a
    /// StatefulSet's; each must still have the uid the reference names.
    fn scale_of(&self, namespace: &str, owner: &OwnerReference) -> Option<(String, i32)> {
        let group = owner.api_version.split('/').next().unwrap_or("");
        match (group, owner.kind.as_str()) {
            ("apps", "ReplicaSet") => {
                let rs = self.caches.replicasets.get(namespace, &owner.name)?;
                if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                    return None;
                }
                match controller_of(&rs.metadata) {
                    Some(d) if d.kind == "Deployment" => {
                        let dep = self.caches.deployments.get(namespace, &d.name)?;
                        let uid = dep.metadata.uid.clone()?;
                        (uid == d.uid).then(|| (uid, dep.spec.replicas.unwrap_or(1)))
                    }
                    _ => Some((owner.uid.clone(), rs.spec.replicas.unwrap_or(1))),
                }
            }
            ("apps", "StatefulSet") => {
                let sts = self.caches.statefulsets.get(namespace, &owner.name)?;
                (sts.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                    .then(|| (owner.uid.clone(), sts.spec.replicas.unwrap_or(1)))
            }
            _ => None,
        }
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let Some(pdb) = self.caches.pdbs.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        let now = self.clock.now();
        let pods = self.caches.pods.in_namespace(&key.namespace);
        let scale_of = |ns: &str, owner: &OwnerReference| self.scale_of(ns, owner);
        let outcome = reconcile(&pdb, &pods, &scale_of, now);
        for n in &outcome.notes {
            let involved = match &n.about {
                About::Budget => reference(pdb.as_ref()),
                About::Pod(name) => {
                    let uid = pods
                        .iter()
                        .find(|p| p.name_any() == *name)
                        .and_then(|p| p.metadata.uid.clone());
                    ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        namespace: Some(key.namespace.clone()),
                        name: Some(name.clone()),
                        uid,
                        ..Default::default()
                    }
                }
            };
            self.events
                .record(&involved, n.type_, n.reason, &n.message)
                .await;
        }
        if normalized(Some(&outcome.status)) != normalized(pdb.status.as_ref()) {
            let kind = Kind::of::<PodDisruptionBudget>(true);
            let mut body = (*pdb).clone();
            body.status = Some(outcome.status);
            let body = serde_json::to_value(&body)
                .map_err(|e| driver::Error::Encode("PodDisruptionBudget".into(), e))?;
            match self
                .effects
                .replace_status(&kind, &key.namespace, &key.name, body)
                .await
            {
                Ok(_) => {}
                // Changed meanwhile (an eviction was granted): the newer budget is on
                // its way through the watch and brings us back.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    return Err(driver::api_error(
                        "update status of",
                        &kind,
                        &key.namespace,
                        &key.name,
                    )(e))
                }
            }
        }
        Ok(match outcome.recheck {
            Some(at) => Next::After(
                at.duration_since(now)
                    .unsigned_abs()
                    .max(Duration::from_millis(10)),
            ),
            None => Next::Done,
        })
    }
}

impl Reconciler for DisruptionController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "disruption"
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
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
    use kube::runtime::watcher;
    use std::sync::Mutex;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn app(v: &str) -> Option<BTreeMap<String, String>> {
        Some(BTreeMap::from([("app".to_string(), v.to_string())]))
    }

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("uid-pdb".into()),
                generation: Some(1),
                resource_version: Some("5".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                selector: Some(LabelSelector {
                    match_labels: app("web"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn pod(name: &str, ready: bool, owner: Option<OwnerReference>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: app("web"),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn three_of(kind: &str) -> Vec<Arc<Pod>> {
        vec![
            pod("a", true, Some(owner(kind, "web-1"))),
            pod("b", true, Some(owner(kind, "web-1"))),
            pod("c", false, Some(owner(kind, "web-1"))),
        ]
    }

    fn scale_5(_: &str, o: &OwnerReference) -> Option<(String, i32)> {
        (o.kind == "ReplicaSet").then(|| ("uid-deploy".to_string(), 5))
    }

    fn counts(o: &Outcome) -> (i32, i32, i32, i32) {
        let s = &o.status;
        (
            s.current_healthy.unwrap(),
            s.desired_healthy.unwrap(),
            s.expected_pods.unwrap(),
            s.disruptions_allowed.unwrap(),
        )
    }

    fn cond(o: &Outcome) -> (String, String) {
        let c = &o.status.conditions.as_ref().unwrap()[0];
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn integer_min_available_counts_the_pods() {
        let p = pdb(Some(IntOrString::Int(1)), None);
        let o = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0));
        // Healthy 2 (c is not ready), desired 1, expected 3 pods, 1 allowed.
        assert_eq!(counts(&o), (2, 1, 3, 1));
        assert_eq!(cond(&o), ("True".into(), "SufficientPods".into()));
        assert_eq!(o.status.observed_generation, Some(1));
        assert!(o.notes.is_empty());

        let p = pdb(Some(IntOrString::Int(2)), None);
        let o = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0));
        assert_eq!(counts(&o), (2, 2, 3, 0));
        assert_eq!(cond(&o), ("False".into(), "InsufficientPods".into()));
    }

    #[test]
    fn percentages_and_max_unavailable_use_the_controllers_scale() {
        // 50% of 5 rounds up to 3.
        let p = pdb(Some(IntOrString::String("50%".into())), None);
        let o = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0));
        assert_eq!(counts(&o), (2, 3, 5, 0));
        // maxUnavailable 1 of 5: 4 must stay.
        let p = pdb(None, Some(IntOrString::Int(1)));
        assert_eq!(
            counts(&reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0))),
            (2, 4, 5, 0)
        );
        // maxUnavailable 50% of 5 (3): 2 must stay, 2 are healthy.
        let p = pdb(None, Some(IntOrString::String("50%".into())));
        assert_eq!(
            counts(&reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0))),
            (2, 2, 5, 0)
        );
        let p = pdb(None, Some(IntOrString::String("60%".into())));
        assert_eq!(
            counts(&reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0))),
            (2, 2, 5, 0)
        );
        let p = pdb(None, Some(IntOrString::String("80%".into())));
        assert_eq!(
            counts(&reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0))),
            (2, 1, 5, 1)
        );
        assert_eq!(
            scaled(&IntOrString::String("x".into()), 3).unwrap_err(),
            "invalid value for IntOrString: invalid type: string is not a percentage"
        );
    }

    #[test]
    fn unknown_controllers_fail_safe_and_unmanaged_pods_are_reported() {
        let p = pdb(None, Some(IntOrString::Int(1)));
        let o = reconcile(&p, &three_of("DaemonSet"), &scale_5, t(0));
        assert_eq!(o.status.disruptions_allowed, Some(0));
        let c = &o.status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SyncFailed")
        );
        assert_eq!(c.message, r#"found no controllers for pod "a""#);
        assert_eq!(o.notes[0].reason, "CalculateExpectedPodCountFailed");
        assert_eq!(
            o.notes[0].message,
            r#"Failed to calculate the number of expected pods: found no controllers for pod "a""#
        );

        let mut pods = three_of("ReplicaSet");
        pods.push(pod("bare", true, None));
        let o = reconcile(&p, &pods, &scale_5, t(0));
        // The bare pod is healthy but adds no scale.
        assert_eq!(counts(&o), (3, 4, 5, 0));
        assert_eq!(o.notes[0].reason, "UnmanagedPods");
        assert!(
            o.notes[0].message.contains(
                "(selector: &LabelSelector{MatchLabels:map[string]string{app: web,},\
                 MatchExpressions:[]LabelSelectorRequirement{},})"
            ),
            "{}",
            o.notes[0].message
        );
    }

    #[test]
    fn granted_evictions_count_as_gone_until_they_time_out() {
        let mut p = pdb(Some(IntOrString::Int(1)), None);
        p.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                ("a".to_string(), Time(t(100))),
                ("b".to_string(), Time(t(0))),
                ("gone".to_string(), Time(t(100))),
            ])),
            ..Default::default()
        });
        let o = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(130));
        // "a" was just evicted: not healthy; "b" timed out (and is reported); "gone"
        // no longer exists.
        assert_eq!(counts(&o), (1, 1, 3, 0));
        assert_eq!(
            o.status.disrupted_pods,
            Some(BTreeMap::from([("a".to_string(), Time(t(100)))]))
        );
        assert_eq!(o.recheck, Some(t(220)));
        assert_eq!(o.notes.len(), 1);
        assert_eq!(o.notes[0].about, About::Pod("b".into()));
        assert_eq!(o.notes[0].reason, "NotDeleted");

        // A pod being deleted leaves the map and does not count.
        let mut deleting = (*pod("a", true, Some(owner("ReplicaSet", "web-1")))).clone();
        deleting.metadata.deletion_timestamp = Some(Time(t(120)));
        let pods = vec![Arc::new(deleting), pod("b", true, None)];
        let mut p = pdb(Some(IntOrString::Int(1)), None);
        p.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([("a".to_string(), Time(t(100)))])),
            ..Default::default()
        });
        let o = reconcile(&p, &pods, &scale_5, t(130));
        assert_eq!(counts(&o), (1, 1, 2, 0));
        assert_eq!(o.status.disrupted_pods, None);
        assert_eq!(o.recheck, None);
    }

    #[test]
    fn selectors_and_conditions_follow_upstream() {
        // No pod matches: NoPods, nothing allowed.
        let mut p = pdb(Some(IntOrString::Int(0)), None);
        p.spec.as_mut().unwrap().selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "In".into(),
                values: Some(vec!["db".into()]),
            }]),
            ..Default::default()
        });
        let o = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0));
        assert_eq!(counts(&o), (0, 0, 0, 0));
        assert_eq!(o.notes[0].reason, "NoPods");
        assert_eq!(o.notes[0].message, "No matching pods found");
        // An empty selector selects every pod of the namespace (policy/v1).
        p.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
        let o = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(0));
        assert_eq!(counts(&o), (2, 0, 3, 2));
        // The transition time moves only when the status does.
        p.status = Some(o.status.clone());
        let same = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(50));
        assert_eq!(
            same.status.conditions.as_ref().unwrap()[0].last_transition_time,
            Time(t(0))
        );
        assert_eq!(
            normalized(Some(&same.status)),
            normalized(p.status.as_ref())
        );
        p.spec.as_mut().unwrap().min_available = Some(IntOrString::Int(3));
        let changed = reconcile(&p, &three_of("ReplicaSet"), &scale_5, t(60));
        let c = &changed.status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.reason.as_str(), c.last_transition_time.clone()),
            ("InsufficientPods", Time(t(60)))
        );
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
    async fn driver_reads_the_deployment_scale_and_writes_the_status() {
        let fx = Arc::new(Recording::default());
        let clock = Arc::new(FixedClock(Mutex::new(t(0))));
        let caches = Arc::new(Caches::new());
        let events = Arc::new(Recorder::new(
            fx.clone(),
            clock.clone(),
            "controllermanager",
        ));
        let c = DisruptionController::new(caches.clone(), fx.clone(), clock, events);
        let queue = Queue::new();
        DisruptionController::watch(&caches, &queue);

        let mut deploy = Deployment::default();
        deploy.metadata.name = Some("web".into());
        deploy.metadata.namespace = Some("default".into());
        deploy.metadata.uid = Some("uid-web".into());
        deploy.spec.replicas = Some(4);
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("web-1".into());
        rs.metadata.namespace = Some("default".into());
        rs.metadata.uid = Some("uid-web-1".into());
        rs.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-web".into(),
            ..owner("Deployment", "web")
        }]);
        rs.spec.replicas = Some(4);
        feed(&caches.deployments, vec![deploy]).await;
        feed(&caches.replicasets, vec![rs]).await;
        feed(&caches.statefulsets, vec![]).await;
        feed(
            &caches.pdbs,
            vec![pdb(None, Some(IntOrString::String("25%".into())))],
        )
        .await;
        feed(
            &caches.pods,
            three_of("ReplicaSet")
                .into_iter()
                .map(|p| (*p).clone())
                .collect(),
        )
        .await;
        let key = queue.next().await;
        assert_eq!(key.name, "web");
        assert_eq!(c.sync(&key).await.unwrap(), Next::Done);
        let calls = fx.calls();
        let status = calls
            .iter()
            .find(|c| c.starts_with("status PodDisruptionBudget default/web"))
            .unwrap();
        // Expected 4 (the Deployment's replicas), 25% of 4 is 1 unavailable: 3 must
        // stay, 2 are healthy.
        for part in [
            r#""expectedPods":4"#,
            r#""desiredHealthy":3"#,
            r#""currentHealthy":2"#,
            r#""disruptionsAllowed":0"#,
            r#""reason":"InsufficientPods""#,
        ] {
            assert!(status.contains(part), "{part} in {status}");
        }
    }
}
