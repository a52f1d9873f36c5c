//! The Job controller: runs a Job's pods until enough of them succeed (or too many fail,
//! or the Job runs out of time), counts them, and deletes finished Jobs whose
//! `ttlSecondsAfterFinished` has passed (upstream's TTL-after-finished controller).
//!
//! Counting follows upstream's tracking with the `batch.kubernetes.io/job-tracking`
//! finalizer: every pod is created with it; a finished pod's uid first goes to
//! `status.uncountedTerminatedPods` (one status write), then its finalizer is removed,
//! then it moves into `succeeded`/`failed` (a second write). A pod is thus counted once
//! even when it is deleted right after finishing, and a deleted pod that had not
//! succeeded counts as failed. Status writes are preconditioned on the Job's
//! resourceVersion, and finalizer removals the caches have not shown yet are remembered,
//! so a stale cache cannot count a pod twice.
//!
//! [`reconcile`] decides one sync from plain values and [`settle`] finishes the count
//! after the finalizers are removed; [`JobController`] feeds them from the shared caches
//! and carries their [`Plan`] out. Pods whose Job is gone or finished lose the finalizer
//! in a sync of their own ([`Work::Orphan`]).

use super::driver::{
    self, controller_of, controller_ref, Caches, Clock, Effects, Key, Kind, LabelMatcher, Next,
    Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use super::replicaset::is_ready;
use futures::future::{join_all, BoxFuture};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::PropagationPolicy;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The finalizer that keeps a Job's pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The label with the uid of the Job that made a pod (its generated selector).
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label with the name of the Job that made a pod.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The older unprefixed labels upstream still adds beside the prefixed ones.
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";
/// The variable an Indexed Job's containers read their index from.
const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// At most this many pods enter `uncountedTerminatedPods` in one sync (upstream's
/// MaxUncountedPods, keeping the status small).
pub const MAX_UNCOUNTED: usize = 500;
/// At most this many pods are created or deleted in one sync.
pub const MAX_PER_SYNC: usize = 500;
/// The delay before replacing a failed pod, doubled per failure since the last success.
const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest such delay.
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// How long a writer waits for the caches to show its own writes before deciding again.
const SETTLE: Duration = Duration::from_secs(10);
/// Writes not seen in the caches after this long are no longer waited for.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

const COMPLETE: &str = "Complete";
const FAILED: &str = "Failed";
const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
const FAILURE_TARGET: &str = "FailureTarget";
const SUSPENDED: &str = "Suspended";

/// A pod a sync deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct Victim {
    /// The pod's name.
    pub name: String,
    /// Its uid (the delete's precondition).
    pub uid: String,
    /// Whether it was ready (the status counts it no more).
    pub ready: bool,
    /// A patch removing the tracking finalizer first, so the pod is not counted: for
    /// pods deleted because the Job is suspended or has too many, not for a Job that
    /// failed (whose deleted pods count as failed).
    pub untrack: Option<Value>,
}

/// What one sync of a Job does, in this order: claims, the Job's own deletion,
/// deletions, creations, a first status write, finalizer removals, then [`settle`] and
/// a second status write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Merge patches adopting orphans that match or releasing pods that stopped
    /// matching: (pod, patch).
    pub claims: Vec<(String, Value)>,
    /// The Job's TTL after finishing has passed: delete it (foreground, as upstream).
    pub delete_job: bool,
    /// Pods to delete.
    pub delete: Vec<Victim>,
    /// Pods to create, each with its completion index in an Indexed Job.
    pub create: Vec<Option<i32>>,
    /// The status to write before removing finalizers (finished pods recorded as
    /// uncounted, interim conditions, active/ready/terminating as they will be).
    pub status: JobStatus,
    /// Finalizers to remove: (pod, uid, patch).
    pub untrack: Vec<(String, String, Value)>,
    /// Uids of the Job's pods that still carry the finalizer (before the removals).
    pub tracked: HashSet<String>,
    /// The terminal condition (Complete or Failed) to add once every finished pod is
    /// counted and none is terminating.
    pub finished: Option<JobCondition>,
    /// Events about the Job: (type, reason, message).
    pub events: Vec<(EventType, &'static str, String)>,
    /// Look again after this long even if nothing changes.
    pub requeue: Option<Duration>,
    /// The backoff record with this sync's newly counted pods, to keep once the first
    /// status write (which stops them being new) succeeded.
    pub backoff: Backoff,
}

/// What a sync sees besides the Job itself.
pub struct Observed<'a> {
    /// Every pod in the Job's namespace.
    pub pods: &'a [Arc<Pod>],
    /// Uids of pods whose finalizer this controller removed but the cache may not show.
    pub untracked: &'a HashSet<String>,
    /// Whether every create and delete of earlier syncs shows in the cache.
    pub satisfied: bool,
    /// The Job's backoff record so far.
    pub backoff: Backoff,
    /// Now.
    pub now: jiff::Timestamp,
}

fn spec_of(job: &Job) -> Option<&JobSpec> {
    job.spec.as_ref()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

fn is_done(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether a pod counts as active: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_done(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Whether a pod is being deleted before it finished.
pub fn is_terminating(pod: &Pod) -> bool {
    !is_done(pod) && pod.metadata.deletion_timestamp.is_some()
}

/// Whether a pod carries the tracking finalizer.
pub fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|f| f == TRACKING_FINALIZER)
}

/// A merge patch removing the tracking finalizer (preconditioned on the pod's
/// resourceVersion, so a finalizer added meanwhile is not lost).
pub fn untrack_patch(pod: &Pod) -> Value {
    let rest: Vec<&String> = pod
        .metadata
        .finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    // `null` drops the field, as upstream's patch leaves no empty list behind.
    let finalizers = if rest.is_empty() {
        Value::Null
    } else {
        json!(rest)
    };
    json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "finalizers": finalizers,
    }})
}

fn true_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// The terminal condition of a finished Job (Complete or Failed, true).
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    true_condition(job, COMPLETE).or_else(|| true_condition(job, FAILED))
}

/// Whether a Job is finished.
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

fn is_indexed(spec: &JobSpec) -> bool {
    spec.completion_mode.as_deref() == Some("Indexed")
}

/// Whether only failed pods are replaced (a terminating pod is waited for).
fn only_replace_failed(spec: &JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// Whether a pod has failed as the Job sees it: phase Failed, or (unless only failed
/// pods are replaced) deleted before it succeeded.
pub fn is_pod_failed(pod: &Pod, spec: &JobSpec) -> bool {
    if phase(pod) == "Failed" {
        return true;
    }
    if only_replace_failed(spec) {
        return false;
    }
    pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded"
}

/// An Indexed Job pod's completion index, from its annotation.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse::<i32>()
        .ok()
        .filter(|i| *i >= 0)
}

/// The selector a Job's pods are found by: its own (the API server generates one on
/// create unless `manualSelector`), or else the controller-uid label its pods are given.
pub fn selector(job: &Job) -> LabelSelector {
    if let Some(s) = spec_of(job).and_then(|s| s.selector.clone()) {
        return s;
    }
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            CONTROLLER_UID.to_string(),
            job.metadata.uid.clone().unwrap_or_default(),
        )])),
        ..Default::default()
    }
}

/// Parses `status.completedIndexes` ("0-2,4") into indexes below `completions`.
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            break;
        };
        for i in first.max(0)..=last.min(completions.saturating_sub(1)) {
            out.insert(i);
        }
    }
    out
}

/// Formats indexes as upstream does: runs of three or more as "a-b", others listed.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &i in set {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(a, b)| match b - a {
            0 => a.to_string(),
            1 => format!("{a},{b}"),
            _ => format!("{a}-{b}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's ensureJobConditionStatus: sets a condition of `type_` (a missing one is
/// only added when not False); says whether anything changed.
fn ensure_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> bool {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status
            || c.reason.as_deref() != Some(reason)
            || c.message.as_deref() != Some(message)
        {
            *c = new_condition(type_, status, reason, message, now);
            return true;
        }
        return false;
    }
    if status != "False" {
        conds.push(new_condition(type_, status, reason, message, now));
        return true;
    }
    false
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// When a pod finished: its containers' last exit, else when it stopped being ready,
/// else its deletion, else its creation.
pub fn finish_time(pod: &Pod) -> Option<jiff::Timestamp> {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    if !containers.is_empty() {
        let ends: Option<Vec<jiff::Timestamp>> = containers
            .iter()
            .map(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.finished_at.as_ref())
                    .map(|t| t.0)
            })
            .collect();
        if let Some(t) = ends.and_then(|e| e.into_iter().max()) {
            return Some(t);
        }
    }
    let not_ready = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    not_ready
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Upstream's per-Job backoff record: failures counted since the last success, and
/// when the last of them finished. Kept in memory by the controller (as upstream's),
/// fed from the pods each sync counts for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    /// Failed pods since the last succeeded one.
    pub failures: u32,
    /// When the last of them finished.
    pub last_failure: Option<jiff::Timestamp>,
}

impl Backoff {
    /// The record after newly counted succeeded and failed pods: a success resets it,
    /// keeping only the failures that finished after the last success.
    pub fn after(self, succeeded: &[&Pod], failed: &[&Pod]) -> Backoff {
        let mut fails: Vec<jiff::Timestamp> =
            failed.iter().filter_map(|p| finish_time(p)).collect();
        fails.sort();
        let Some(last_success) = succeeded.iter().filter_map(|p| finish_time(p)).max() else {
            if fails.is_empty() {
                return self;
            }
            return Backoff {
                failures: self
                    .failures
                    .saturating_add(u32::try_from(fails.len()).unwrap_or(u32::MAX)),
                last_failure: fails.last().copied(),
            };
        };
        let later: Vec<jiff::Timestamp> = fails.into_iter().filter(|t| *t > last_success).collect();
        Backoff {
            failures: u32::try_from(later.len()).unwrap_or(u32::MAX),
            last_failure: later.last().copied(),
        }
    }

    /// How long to wait before creating pods again: 10 s doubled for each failure after
    /// the first, at most 10 min, counted from the last failure.
    pub fn remaining(&self, now: jiff::Timestamp) -> Duration {
        let (n, Some(last)) = (self.failures, self.last_failure) else {
            return Duration::ZERO;
        };
        if n == 0 {
            return Duration::ZERO;
        }
        let delay = POD_FAILURE_BACKOFF
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(MAX_POD_FAILURE_BACKOFF);
        let elapsed = now.duration_since(last);
        if elapsed.is_negative() {
            return delay;
        }
        delay.saturating_sub(elapsed.unsigned_abs())
    }
}

/// Whether the restarts of containers of running pods (restartPolicy OnFailure) have
/// reached the backoff limit.
fn past_backoff_limit_on_failure(spec: &JobSpec, pods: &[Cow<'_, Pod>], limit: i32) -> bool {
    let restart = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref());
    if restart != Some("OnFailure") {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            let init = s.init_container_statuses.as_deref().unwrap_or_default();
            let main = s.container_statuses.as_deref().unwrap_or_default();
            init.iter().chain(main).map(|c| i64::from(c.restart_count))
        })
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= i64::from(limit)
    }
}

/// Upstream's order of deletion among active pods (smaller goes first): unscheduled,
/// then pending before running, not ready before ready, newer before older.
fn deletion_key(p: &Pod) -> (bool, u8, bool, std::cmp::Reverse<Option<jiff::Timestamp>>) {
    let assigned = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let rank = match phase(p) {
        "Pending" | "" => 0,
        "Running" => 2,
        _ => 1,
    };
    (
        assigned,
        rank,
        is_ready(p),
        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

/// The active pods to delete: in an Indexed Job first those without a valid index and
/// all but the best of each repeated index, then up to `at_least` in deletion order.
fn pods_for_removal<'p>(active: &[&'p Pod], indexed: Option<i32>, at_least: usize) -> Vec<&'p Pod> {
    let mut rm: Vec<&Pod> = Vec::new();
    let mut left: Vec<&Pod> = Vec::new();
    match indexed {
        Some(completions) => {
            let mut by_index: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
            for p in active {
                match completion_index(p).filter(|i| *i < completions) {
                    Some(i) => by_index.entry(i).or_default().push(p),
                    None => rm.push(p),
                }
            }
            for (_, mut same) in by_index {
                same.sort_by_cached_key(|p| deletion_key(p));
                if let Some(keep) = same.pop() {
                    left.push(keep);
                }
                rm.extend(same);
            }
        }
        None => left = active.to_vec(),
    }
    if rm.len() < at_least {
        left.sort_by_cached_key(|p| deletion_key(p));
        let more = (at_least - rm.len()).min(left.len());
        rm.extend(left.into_iter().take(more));
    }
    rm
}

/// The first `n` indexes below `completions` that neither succeeded nor have a pod.
fn pending_indexes(busy: &BTreeSet<i32>, completions: i32, n: usize) -> Vec<i32> {
    (0..completions)
        .filter(|i| !busy.contains(i))
        .take(n)
        .collect()
}

/// Decides one sync of `job`.
pub fn reconcile(job: &Job, obs: &Observed<'_>) -> Plan {
    let now = obs.now;
    let current = job.status.clone().unwrap_or_default();
    let mut plan = Plan {
        status: current.clone(),
        ..Default::default()
    };
    let Some(spec) = spec_of(job) else {
        return plan;
    };

    // A finished Job only waits for its time to live.
    if let Some(done) = finished_condition(job) {
        if let (Some(ttl), None) = (
            spec.ttl_seconds_after_finished,
            &job.metadata.deletion_timestamp,
        ) {
            let at = done
                .last_transition_time
                .as_ref()
                .or(current.completion_time.as_ref())
                .map_or(now, |t| t.0);
            let expires = at + jiff::SignedDuration::from_secs(i64::from(ttl));
            if expires <= now {
                plan.delete_job = true;
            } else {
                plan.requeue = Some(expires.duration_since(now).unsigned_abs());
            }
        }
        return plan;
    }

    let uid = job.metadata.uid.as_deref().unwrap_or("");
    let deleting = job.metadata.deletion_timestamp.is_some();
    let matcher = LabelMatcher::new(Some(&selector(job)));

    // Claim: the pods this Job controls and that match, plus matching orphans.
    let mut pods: Vec<Cow<'_, Pod>> = Vec::new();
    for pod in obs.pods.iter().map(Arc::as_ref) {
        let matches = matcher.matches(pod.metadata.labels.as_ref());
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    pods.push(Cow::Borrowed(pod));
                } else if !deleting {
                    let refs: Vec<Value> = pod
                        .owner_references()
                        .iter()
                        .filter(|o| o.uid != uid)
                        .map(|o| json!(o))
                        .collect();
                    plan.claims.push((
                        pod.name_any(),
                        json!({"metadata": {
                            "resourceVersion": pod.metadata.resource_version,
                            "ownerReferences": refs,
                        }}),
                    ));
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                let mut refs: Vec<Value> =
                    pod.owner_references().iter().map(|o| json!(o)).collect();
                refs.push(json!(controller_ref(job)));
                let mut adopted = pod.clone();
                let finalizers = adopted.metadata.finalizers.get_or_insert_with(Vec::new);
                if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
                    finalizers.push(TRACKING_FINALIZER.into());
                }
                plan.claims.push((
                    pod.name_any(),
                    json!({"metadata": {
                        "resourceVersion": pod.metadata.resource_version,
                        "ownerReferences": refs,
                        "finalizers": finalizers,
                    }}),
                ));
                pods.push(Cow::Owned(adopted));
            }
            None => {}
        }
    }

    let indexed = is_indexed(spec);
    let completions = spec.completions;
    let index_limit = indexed.then(|| completions.unwrap_or(0));
    let valid_index = |p: &Pod| match index_limit {
        Some(limit) => completion_index(p).is_some_and(|i| i < limit),
        None => true,
    };
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let suspended = spec.suspend == Some(true);
    let tracked = |p: &Pod| has_finalizer(p) && !obs.untracked.contains(uid_of(p));

    let active_pods: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| is_active(p))
        .collect();
    let mut active = count(active_pods.len());
    let mut ready = count(active_pods.iter().filter(|p| is_ready(p)).count());
    let mut terminating = count(pods.iter().filter(|p| is_terminating(p)).count());

    let mut status = current.clone();
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let uncounted_s: HashSet<String> = uncounted.succeeded.iter().flatten().cloned().collect();
    let uncounted_f: HashSet<String> = uncounted.failed.iter().flatten().cloned().collect();
    let new_succeeded: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            tracked(p)
                && !uncounted_s.contains(uid_of(p))
                && valid_index(p)
                && phase(p) == "Succeeded"
        })
        .collect();
    let new_failed: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            tracked(p)
                && !uncounted_f.contains(uid_of(p))
                && valid_index(p)
                && is_pod_failed(p, spec)
        })
        .collect();
    let mut succeeded =
        current.succeeded.unwrap_or(0) + count(new_succeeded.len()) + count(uncounted_s.len());
    let failed = current.failed.unwrap_or(0) + count(new_failed.len()) + count(uncounted_f.len());
    plan.backoff = obs.backoff.after(&new_succeeded, &new_failed);

    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    // Has the Job met its end (possibly in an earlier sync)?
    let mut finished: Option<JobCondition> = true_condition(job, SUCCESS_CRITERIA_MET).cloned();
    if finished.is_none() {
        if let Some(target) = true_condition(job, FAILURE_TARGET) {
            finished = Some(new_condition(
                FAILED,
                "True",
                target.reason.as_deref().unwrap_or(""),
                target.message.as_deref().unwrap_or(""),
                now,
            ));
        }
    }
    if finished.is_none() {
        let deadline = spec
            .active_deadline_seconds
            .filter(|_| !suspended)
            .zip(status.start_time.as_ref())
            .map(|(s, start)| start.0 + jiff::SignedDuration::from_secs(s));
        if failed > backoff_limit || past_backoff_limit_on_failure(spec, &pods, backoff_limit) {
            finished = Some(new_condition(
                FAILURE_TARGET,
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if deadline.is_some_and(|d| d <= now) {
            finished = Some(new_condition(
                FAILURE_TARGET,
                "True",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                now,
            ));
        } else if let Some(d) = deadline {
            plan.requeue = Some(d.duration_since(now).unsigned_abs());
        }
    }

    // Indexes that succeeded: those recorded, plus succeeded pods not yet counted.
    let prev_indexes = match index_limit {
        Some(limit) => parse_indexes(current.completed_indexes.as_deref().unwrap_or(""), limit),
        None => BTreeSet::new(),
    };
    let mut succeeded_indexes = prev_indexes.clone();
    if indexed {
        for p in pods
            .iter()
            .filter(|p| phase(p) == "Succeeded" && has_finalizer(p))
        {
            if let Some(i) = completion_index(p).filter(|_| valid_index(p)) {
                succeeded_indexes.insert(i);
            }
        }
        succeeded = count(succeeded_indexes.len());
    }

    let mut conditions = status.conditions.take().unwrap_or_default();
    if finished.is_some() {
        // The Job failed (or succeeded early): its active pods go, and count as failed.
        plan.delete = active_pods
            .iter()
            .map(|p| Victim {
                name: p.name_any(),
                uid: uid_of(p).to_string(),
                ready: is_ready(p),
                untrack: None,
            })
            .collect();
        if !obs.satisfied {
            finished = None;
        }
        let n = count(plan.delete.len());
        active -= n;
        terminating += n;
        ready -= count(plan.delete.iter().filter(|v| v.ready).count());
    } else {
        let mut managed = false;
        if obs.satisfied && !deleting {
            managed = true;
            let m = manage(
                spec,
                &pods,
                &active_pods,
                ManageState {
                    active,
                    ready,
                    terminating,
                    succeeded,
                    parallelism,
                    succeeded_indexes: &succeeded_indexes,
                    backoff: plan.backoff,
                    now,
                },
                &mut plan,
            );
            active = m.active;
            ready = m.ready;
            terminating = m.terminating;
        }
        let complete = match completions {
            None => succeeded > 0 && active == 0,
            Some(c) => succeeded >= c && active == 0,
        };
        if complete {
            finished = Some(new_condition(
                SUCCESS_CRITERIA_MET,
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
        } else if managed {
            if suspended {
                if ensure_condition(
                    &mut conditions,
                    SUSPENDED,
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                ) {
                    plan.events
                        .push((EventType::Normal, "Suspended", "Job suspended".into()));
                }
            } else if ensure_condition(
                &mut conditions,
                SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            ) {
                plan.events
                    .push((EventType::Normal, "Resumed", "Job resumed".into()));
                // The deadline counts from the resumption.
                status.start_time = Some(Time(now));
            }
        }
    }
    status.active = nonzero(active);
    status.ready = Some(ready.max(0));
    status.terminating = Some(terminating.max(0));

    // Record finished pods as uncounted, and pick the finalizers to remove.
    plan.tracked = pods
        .iter()
        .filter(|p| tracked(p))
        .map(|p| uid_of(p).to_string())
        .collect();
    count_uncounted(&mut status, &plan.tracked);
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let mut uncounted_s_list = uncounted.succeeded.take().unwrap_or_default();
    let mut uncounted_f_list = uncounted.failed.take().unwrap_or_default();
    let mut new_indexes: Vec<i32> = Vec::new();
    let mut reached_max = false;
    let mut order: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    if indexed {
        order.sort_by_key(|p| completion_index(p).unwrap_or(i32::MAX));
    }
    let failing = finished
        .as_ref()
        .is_some_and(|f| f.type_ != SUCCESS_CRITERIA_MET);
    for pod in order {
        if !tracked(pod) {
            continue;
        }
        let pod_failed = is_pod_failed(pod, spec);
        let removable = deleting || finished.is_some() || phase(pod) == "Succeeded" || pod_failed;
        if !removable {
            continue;
        }
        let uid = uid_of(pod).to_string();
        plan.untrack
            .push((pod.name_any(), uid.clone(), untrack_patch(pod)));
        if phase(pod) == "Succeeded" && !uncounted_f.contains(&uid) {
            if indexed {
                if let Some(i) = completion_index(pod).filter(|_| valid_index(pod)) {
                    if !prev_indexes.contains(&i) {
                        new_indexes.push(i);
                    }
                }
            } else if !uncounted_s.contains(&uid) {
                uncounted_s_list.push(uid);
            }
        } else if (pod_failed || failing) && !uncounted_f.contains(&uid) && valid_index(pod) {
            uncounted_f_list.push(uid);
        }
        if new_indexes.len() + uncounted_s_list.len() + uncounted_f_list.len() >= MAX_UNCOUNTED {
            reached_max = true;
            break;
        }
    }
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    uncounted.succeeded = (!uncounted_s_list.is_empty()).then_some(uncounted_s_list);
    uncounted.failed = (!uncounted_f_list.is_empty()).then_some(uncounted_f_list);
    if indexed {
        succeeded_indexes.extend(new_indexes);
        let s = format_indexes(&succeeded_indexes);
        status.succeeded = nonzero(count(succeeded_indexes.len()));
        status.completed_indexes = (!s.is_empty()).then_some(s);
    }

    // The interim condition is written before the finalizers go; the terminal one after.
    if let Some(f) = finished.take() {
        if f.type_ == FAILURE_TARGET {
            let reason = f.reason.clone().unwrap_or_default();
            let message = f.message.clone().unwrap_or_default();
            conditions.push(f);
            finished = Some(new_condition(FAILED, "True", &reason, &message, now));
        } else if f.type_ == SUCCESS_CRITERIA_MET {
            if true_condition(job, SUCCESS_CRITERIA_MET).is_none() {
                conditions.push(f.clone());
            }
            finished = Some(new_condition(
                COMPLETE,
                "True",
                f.reason.as_deref().unwrap_or(""),
                f.message.as_deref().unwrap_or(""),
                now,
            ));
        } else {
            finished = Some(f);
        }
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    plan.finished = if reached_max { None } else { finished };
    plan.status = status;
    plan
}

/// What [`manage`] works from.
struct ManageState<'a> {
    active: i32,
    ready: i32,
    terminating: i32,
    succeeded: i32,
    parallelism: i32,
    succeeded_indexes: &'a BTreeSet<i32>,
    backoff: Backoff,
    now: jiff::Timestamp,
}

/// The counts after [`manage`]'s deletions and creations.
struct Managed {
    active: i32,
    ready: i32,
    terminating: i32,
}

/// Upstream's manageJob: deletes active pods of a suspended Job or beyond what is
/// wanted, otherwise creates the missing ones (after the failure backoff).
fn manage(
    spec: &JobSpec,
    pods: &[Cow<'_, Pod>],
    active_pods: &[&Pod],
    st: ManageState<'_>,
    plan: &mut Plan,
) -> Managed {
    let mut out = Managed {
        active: st.active,
        ready: st.ready,
        terminating: st.terminating,
    };
    let indexed = is_indexed(spec);
    let index_limit = indexed.then(|| spec.completions.unwrap_or(0));
    fn remove(victims: Vec<&Pod>, plan: &mut Plan, out: &mut Managed) {
        for p in victims.into_iter().take(MAX_PER_SYNC) {
            let ready = is_ready(p);
            plan.delete.push(Victim {
                name: p.name_any(),
                uid: uid_of(p).to_string(),
                ready,
                untrack: has_finalizer(p).then(|| untrack_patch(p)),
            });
            out.active -= 1;
            out.terminating += 1;
            if ready {
                out.ready -= 1;
            }
        }
    }
    if spec.suspend == Some(true) {
        let victims = pods_for_removal(active_pods, index_limit, active_pods.len());
        remove(victims, plan, &mut out);
        return out;
    }
    let want = match spec.completions {
        None if st.succeeded > 0 => st.active,
        None => st.parallelism,
        Some(c) => (c - st.succeeded).min(st.parallelism).max(0),
    };
    let excess = usize::try_from(st.active - want).unwrap_or(0);
    let victims = pods_for_removal(active_pods, index_limit, excess);
    if !victims.is_empty() {
        remove(victims, plan, &mut out);
        return out;
    }
    let waiting = if only_replace_failed(spec) {
        st.terminating
    } else {
        0
    };
    let diff = want - waiting - st.active;
    if diff <= 0 {
        return out;
    }
    let wait = st.backoff.remaining(st.now);
    if !wait.is_zero() {
        plan.requeue = Some(plan.requeue.map_or(wait, |r| r.min(wait)));
        return out;
    }
    let n = usize::try_from(diff).unwrap_or(0).min(MAX_PER_SYNC);
    match index_limit {
        Some(completions) => {
            let mut busy = st.succeeded_indexes.clone();
            busy.extend(active_pods.iter().filter_map(|p| completion_index(p)));
            if only_replace_failed(spec) {
                busy.extend(
                    pods.iter()
                        .filter(|p| is_terminating(p))
                        .filter_map(|p| completion_index(p)),
                );
            }
            plan.create = pending_indexes(&busy, completions, n)
                .into_iter()
                .map(Some)
                .collect();
        }
        None => plan.create = vec![None; n],
    }
    out.active += count(plan.create.len());
    out
}

/// Moves uids of `status.uncountedTerminatedPods` whose pod no longer carries the
/// finalizer (not in `tracked`) into the counters; says whether any moved.
pub fn count_uncounted(status: &mut JobStatus, tracked: &HashSet<String>) -> bool {
    let Some(u) = status.uncounted_terminated_pods.as_mut() else {
        return false;
    };
    let mut moved = false;
    let mut split = |list: &mut Option<Vec<String>>| -> i32 {
        let all = list.take().unwrap_or_default();
        let (keep, gone): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|uid| tracked.contains(uid));
        *list = (!keep.is_empty()).then_some(keep);
        moved |= !gone.is_empty();
        count(gone.len())
    };
    let succeeded = split(&mut u.succeeded);
    let failed = split(&mut u.failed);
    if succeeded > 0 {
        status.succeeded = nonzero(status.succeeded.unwrap_or(0) + succeeded);
    }
    if failed > 0 {
        status.failed = nonzero(status.failed.unwrap_or(0) + failed);
    }
    moved
}

/// After the finalizer removals: counts the pods that lost theirs (`tracked` holds the
/// uids still carrying it), and adds the terminal condition `finished` once nothing is
/// uncounted or terminating. Answers the status and whether the Job finished now.
pub fn settle(
    mut status: JobStatus,
    tracked: &HashSet<String>,
    finished: Option<&JobCondition>,
    now: jiff::Timestamp,
) -> (JobStatus, bool) {
    count_uncounted(&mut status, tracked);
    let Some(f) = finished else {
        return (status, false);
    };
    let uncounted = status.uncounted_terminated_pods.as_ref().map_or(0, |u| {
        u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
    });
    if uncounted > 0 || status.terminating.unwrap_or(0) > 0 {
        return (status, false);
    }
    let mut conds = status.conditions.take().unwrap_or_default();
    ensure_condition(
        &mut conds,
        &f.type_,
        "True",
        f.reason.as_deref().unwrap_or(""),
        f.message.as_deref().unwrap_or(""),
        now,
    );
    status.conditions = Some(conds);
    if f.type_ == COMPLETE {
        status.completion_time = Some(Time(now));
    }
    (status, true)
}

fn generate_name(job: &str, index: Option<i32>) -> String {
    // Upstream keeps generated names within 63 characters (58 plus 5 random ones).
    const MAX: usize = 58;
    match index {
        Some(i) => {
            let suffix = format!("-{i}-");
            let mut base = job.to_string();
            if base.len() + suffix.len() > MAX {
                let mut cut = MAX.saturating_sub(suffix.len());
                while cut > 0 && !base.is_char_boundary(cut) {
                    cut -= 1;
                }
                base.truncate(cut);
            }
            format!("{base}{suffix}")
        }
        None => format!("{job}-"),
    }
}

/// The pod a Job creates, with `index` in an Indexed Job: the template plus the
/// tracking finalizer, the controller reference and the Job's labels (which upstream's
/// API server puts in the template on create); an index also gives an annotation, a
/// label, a hostname and the `JOB_COMPLETION_INDEX` variable.
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Value {
    let name = job.name_any();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = spec_of(job);
    let template = spec.map(|s| &s.template);
    let meta = template.and_then(|t| t.metadata.as_ref());
    let mut labels: BTreeMap<String, String> =
        meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    if spec.and_then(|s| s.manual_selector) != Some(true) {
        for (k, v) in [
            (CONTROLLER_UID, &uid),
            (JOB_NAME, &name),
            (LEGACY_CONTROLLER_UID, &uid),
            (LEGACY_JOB_NAME, &name),
        ] {
            labels.insert(k.to_string(), v.clone());
        }
    }
    let mut annotations: BTreeMap<String, String> =
        meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    let mut finalizers: Vec<String> = meta.and_then(|m| m.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let mut pod_spec = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .unwrap_or_else(|| json!({}));
    if let Some(i) = index {
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        pod_spec["hostname"] = format!("{name}-{i}").into();
        let var = json!({"name": INDEX_ENV, "valueFrom": {"fieldRef": {
            "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']"),
        }}});
        for list in ["initContainers", "containers"] {
            if let Some(containers) = pod_spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in containers {
                    let env = c
                        .as_object_mut()
                        .map(|o| o.entry("env").or_insert_with(|| json!([])));
                    if let Some(Value::Array(env)) = env {
                        if !env.iter().any(|e| e["name"] == INDEX_ENV) {
                            env.push(var.clone());
                        }
                    }
                }
            }
        }
    }
    let mut metadata = json!({
        "generateName": generate_name(&name, index),
        "namespace": job.namespace(),
        "labels": labels,
        "finalizers": finalizers,
        "ownerReferences": [controller_ref(job)],
    });
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": pod_spec,
    })
}

/// What the queue holds: a Job to sync, or a pod whose tracking finalizer may have to
/// go because its Job is gone or finished.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// A Job.
    Job(Key),
    /// A pod that may be an orphan with the tracking finalizer.
    Orphan(Key),
}

/// Writes of earlier syncs the caches have not shown yet (upstream's expectations).
#[derive(Default)]
struct Expected {
    /// Pods created: name → when.
    creates: HashMap<String, Instant>,
    /// Pods deleted: uid → (name, when).
    deletes: HashMap<String, (String, Instant)>,
    /// Pods whose finalizer was removed: uid → (name, when).
    untracked: HashMap<String, (String, Instant)>,
}

impl Expected {
    fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.deletes.is_empty() && self.untracked.is_empty()
    }
}

/// Registers the controller's hooks and returns its workers (5, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    JobController::watch(&ctx.caches, &queue);
    let controller = JobController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("job-controller"),
    );
    ctx.workers(controller, queue, 5)
}

/// The controller: caches in, API calls out.
pub struct JobController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    events: Arc<Recorder>,
    settle: Duration,
    expected: Mutex<HashMap<Key, Expected>>,
    backoffs: Mutex<HashMap<Key, Backoff>>,
}

fn is_job_ref(r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> bool {
    r.kind == "Job" && r.api_version == "batch/v1"
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => driver::chain(other),
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl JobController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(JobController {
            caches,
            effects,
            clock,
            events,
            settle: SETTLE,
            expected: Mutex::new(HashMap::new()),
            backoffs: Mutex::new(HashMap::new()),
        })
    }

    /// Registers the cache hooks that fill `queue`: a Job's changes (and, once it is
    /// gone, its pods that still carry the finalizer), its pods' changes (a pod of a
    /// finished or missing Job that carries the finalizer as an orphan), and orphan
    /// pods' changes for every Job that selects them.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Work>>) {
        let (q, pods) = (queue.clone(), caches.pods.clone());
        caches.jobs.on_change(Box::new(move |job: &Job, change| {
            let key = Key::of(&job.metadata);
            if change == driver::Change::Deleted {
                let uid = job.metadata.uid.as_deref().unwrap_or("");
                for p in pods.in_namespace(&key.namespace) {
                    if has_finalizer(&p) && controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
                    {
                        q.add(Work::Orphan(Key::of(&p.metadata)));
                    }
                }
            }
            q.add(Work::Job(key));
        }));
        let (q, jobs) = (queue.clone(), caches.jobs.clone());
        caches.pods.on_change(Box::new(move |pod: &Pod, _| {
            let ns = pod.namespace().unwrap_or_default();
            let tracked = has_finalizer(pod);
            match controller_of(&pod.metadata) {
                Some(r) if is_job_ref(r) => match jobs.get(&ns, &r.name) {
                    Some(job) if job.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                        if tracked && is_finished(&job) {
                            q.add(Work::Orphan(Key::of(&pod.metadata)));
                        }
                        q.add(Work::Job(Key::of(&job.metadata)));
                    }
                    _ if tracked => q.add(Work::Orphan(Key::of(&pod.metadata))),
                    _ => {}
                },
                Some(_) => {}
                None => {
                    if tracked {
                        q.add(Work::Orphan(Key::of(&pod.metadata)));
                    }
                    if pod.metadata.labels.as_ref().is_some_and(|l| !l.is_empty()) {
                        for job in jobs.in_namespace(&ns) {
                            if is_finished(&job) {
                                continue;
                            }
                            let m = LabelMatcher::new(Some(&selector(&job)));
                            if m.matches(pod.metadata.labels.as_ref()) {
                                q.add(Work::Job(Key::of(&job.metadata)));
                            }
                        }
                    }
                }
            }
        }));
    }

    fn lock_expected(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Expected>> {
        self.expected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets expectations the pod cache now shows (or that timed out); answers the
    /// uids whose finalizer removal is not shown yet and whether creates and deletes
    /// are all seen.
    fn observe(&self, key: &Key) -> (HashSet<String>, bool) {
        let mut all = self.lock_expected();
        let Some(e) = all.get_mut(key) else {
            return (HashSet::new(), true);
        };
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < EXPECTATIONS_TIMEOUT;
        let pods = &self.caches.pods;
        e.creates
            .retain(|name, at| fresh(at) && pods.get(&key.namespace, name).is_none());
        e.deletes.retain(|uid, (name, at)| {
            fresh(at)
                && pods.get(&key.namespace, name).is_some_and(|p| {
                    p.metadata.uid.as_deref() == Some(uid.as_str())
                        && p.metadata.deletion_timestamp.is_none()
                })
        });
        e.untracked.retain(|uid, (name, at)| {
            fresh(at)
                && pods.get(&key.namespace, name).is_some_and(|p| {
                    p.metadata.uid.as_deref() == Some(uid.as_str()) && has_finalizer(&p)
                })
        });
        let untracked = e.untracked.keys().cloned().collect();
        let satisfied = e.creates.is_empty() && e.deletes.is_empty();
        if e.is_empty() {
            all.remove(key);
        }
        (untracked, satisfied)
    }

    fn expect(&self, key: &Key, f: impl FnOnce(&mut Expected)) {
        f(self.lock_expected().entry(key.clone()).or_default());
    }

    fn lock_backoffs(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Backoff>> {
        self.backoffs.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn sync_job(&self, key: &Key) -> driver::Result<Next> {
        let job = self
            .caches
            .jobs
            .get(&key.namespace, &key.name)
            .filter(|j| !is_finished(j));
        let Some(job) = job else {
            // Gone or finished: nothing to wait for or back off from any more.
            self.lock_expected().remove(key);
            self.lock_backoffs().remove(key);
            if let Some(done) = self.caches.jobs.get(&key.namespace, &key.name) {
                let plan = reconcile(
                    &done,
                    &Observed {
                        pods: &[],
                        untracked: &HashSet::new(),
                        satisfied: true,
                        backoff: Backoff::default(),
                        now: self.clock.now(),
                    },
                );
                return self.apply(key, &done, plan, self.clock.now()).await;
            }
            return Ok(Next::Done);
        };
        let (untracked, satisfied) = self.observe(key);
        let pods = self.caches.pods.in_namespace(&key.namespace);
        let now = self.clock.now();
        let backoff = self.lock_backoffs().get(key).copied().unwrap_or_default();
        let plan = reconcile(
            &job,
            &Observed {
                pods: &pods,
                untracked: &untracked,
                satisfied,
                backoff,
                now,
            },
        );
        self.apply(key, &job, plan, now).await
    }

    /// Carries a [`Plan`] out.
    pub async fn apply(
        &self,
        key: &Key,
        job: &Job,
        mut plan: Plan,
        now: jiff::Timestamp,
    ) -> driver::Result<Next> {
        let ns = key.namespace.as_str();
        let pods = Kind::pods();
        let me = reference(job);
        let mut next = plan.requeue.map_or(Next::Done, Next::After);

        for (pod, patch) in std::mem::take(&mut plan.claims) {
            match self.effects.merge_patch(&pods, ns, &pod, patch).await {
                Ok(_) => {}
                // Gone or changed meanwhile: its event brings us back.
                Err(e) if matches!(code(&e), Some(404 | 409)) => return Ok(next),
                Err(e) => return Err(driver::api_error("patch", &pods, ns, &pod)(e)),
            }
        }

        if plan.delete_job {
            let kind = Kind::of::<Job>(true);
            let uid = job.metadata.uid.as_deref();
            return match self
                .effects
                .delete(
                    &kind,
                    ns,
                    &key.name,
                    uid,
                    Some(PropagationPolicy::Foreground),
                )
                .await
            {
                Ok(()) => Ok(Next::Done),
                Err(e) if matches!(code(&e), Some(404 | 409)) => Ok(Next::Done),
                Err(e) => Err(driver::api_error("delete", &kind, ns, &key.name)(e)),
            };
        }

        let mut failure = false;
        let failed_deletes = self.delete(key, job, &plan.delete).await;
        if failed_deletes > 0 {
            failure = true;
            // The pods stay active; a Job cannot finish before they are gone.
            plan.finished = None;
            let n = count(failed_deletes);
            plan.status.active = nonzero(plan.status.active.unwrap_or(0) + n);
            plan.status.terminating = Some((plan.status.terminating.unwrap_or(0) - n).max(0));
        }
        let missing = self.create(key, job, &plan.create).await;
        if missing > 0 {
            failure = true;
            let active = plan.status.active.unwrap_or(0) - count(missing);
            plan.status.active = nonzero(active.max(0));
        }

        for (t, reason, msg) in &plan.events {
            self.events.record(&me, *t, reason, msg).await;
        }

        // First write: finished pods recorded as uncounted before their finalizers go.
        let mut body = job.clone();
        if job.status.as_ref() != Some(&plan.status) {
            body.status = Some(plan.status.clone());
            match self.write_status(&body).await? {
                Some(rv) => body.metadata.resource_version = Some(rv),
                None => return Ok(next.min(Next::After(Duration::from_secs(1)))),
            }
        }
        // The newly finished pods are recorded: they will not be new again.
        if plan.backoff != Backoff::default() {
            self.lock_backoffs().insert(key.clone(), plan.backoff);
        } else {
            self.lock_backoffs().remove(key);
        }

        let mut tracked = plan.tracked.clone();
        let results = join_all(
            plan.untrack
                .iter()
                .map(|(name, _, patch)| self.effects.merge_patch(&pods, ns, name, patch.clone())),
        )
        .await;
        for ((name, uid, _), r) in plan.untrack.iter().zip(results) {
            match r {
                Ok(_) => {
                    tracked.remove(uid);
                    self.expect(key, |e| {
                        e.untracked
                            .insert(uid.clone(), (name.clone(), Instant::now()));
                    });
                }
                Err(e) if code(&e) == Some(404) => {
                    tracked.remove(uid);
                }
                Err(e) => {
                    tracing::debug!(pod = %name, error = %driver::chain(&e), "could not remove the job-tracking finalizer");
                    failure = true;
                }
            }
        }

        // Second write: the counters, and the terminal condition once all is counted.
        let written = body.status.clone().unwrap_or_default();
        let (status, done) = settle(written.clone(), &tracked, plan.finished.as_ref(), now);
        if status != written {
            body.status = Some(status.clone());
            if self.write_status(&body).await?.is_none() {
                return Ok(next.min(Next::After(Duration::from_secs(1))));
            }
            if done {
                self.record_finished(job, &status, plan.finished.as_ref())
                    .await;
            }
        }
        if failure {
            next = next.min(Next::After(Duration::from_secs(5)));
        }
        Ok(next)
    }

    async fn record_finished(
        &self,
        job: &Job,
        status: &JobStatus,
        finished: Option<&JobCondition>,
    ) {
        let Some(f) = finished else { return };
        let me = reference(job);
        if f.type_ == COMPLETE {
            let completions = spec_of(job).and_then(|s| s.completions);
            if completions.is_some_and(|c| status.succeeded.unwrap_or(0) > c) {
                self.events
                    .record(
                        &me,
                        EventType::Warning,
                        "TooManySucceededPods",
                        "Too many succeeded pods running after completion count reached",
                    )
                    .await;
            }
            self.events
                .record(&me, EventType::Normal, "Completed", "Job completed")
                .await;
        } else {
            self.events
                .record(
                    &me,
                    EventType::Warning,
                    f.reason.as_deref().unwrap_or(""),
                    f.message.as_deref().unwrap_or(""),
                )
                .await;
        }
    }

    /// Replaces the Job's status; answers the new resourceVersion, or `None` when the
    /// Job changed or went meanwhile (its event brings us back).
    async fn write_status(&self, job: &Job) -> driver::Result<Option<String>> {
        let kind = Kind::of::<Job>(true);
        let ns = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let body = serde_json::to_value(job).map_err(|e| driver::Error::Encode("Job".into(), e))?;
        match self.effects.replace_status(&kind, &ns, &name, body).await {
            Ok(v) => Ok(Some(
                v.pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )),
            Err(e) if matches!(code(&e), Some(404 | 409)) => Ok(None),
            Err(e) => Err(driver::api_error("update status of", &kind, &ns, &name)(e)),
        }
    }

    /// Deletes `victims` (removing the finalizer first where asked); answers how many
    /// could not be deleted.
    async fn delete(&self, key: &Key, job: &Job, victims: &[Victim]) -> usize {
        if victims.is_empty() {
            return 0;
        }
        let ns = key.namespace.as_str();
        let kind = Kind::pods();
        let me = reference(job);
        let results = join_all(victims.iter().map(|v| async {
            if let Some(patch) = &v.untrack {
                match self
                    .effects
                    .merge_patch(&kind, ns, &v.name, patch.clone())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if code(&e) == Some(404) => {}
                    Err(e) => return Err(e),
                }
            }
            match self
                .effects
                .delete(&kind, ns, &v.name, Some(&v.uid), None)
                .await
            {
                Err(e) if code(&e) == Some(404) => Ok(()),
                other => other,
            }
        }))
        .await;
        let mut failed = 0;
        for (v, r) in victims.iter().zip(results) {
            match r {
                Ok(()) => {
                    self.expect(key, |e| {
                        e.deletes
                            .insert(v.uid.clone(), (v.name.clone(), Instant::now()));
                        if v.untrack.is_some() {
                            e.untracked
                                .insert(v.uid.clone(), (v.name.clone(), Instant::now()));
                        }
                    });
                    self.events
                        .record(
                            &me,
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {}", v.name),
                        )
                        .await;
                }
                Err(e) => {
                    failed += 1;
                    self.events
                        .record(
                            &me,
                            EventType::Warning,
                            "FailedDelete",
                            &format!("Error deleting: {}", api_message(&e)),
                        )
                        .await;
                }
            }
        }
        let gone: Vec<(String, String)> = victims
            .iter()
            .map(|v| (v.name.clone(), v.uid.clone()))
            .collect();
        self.caches
            .pods
            .wait_for(
                |c| {
                    gone.iter().all(|(n, u)| {
                        c.get(ns, n).is_none_or(|p| {
                            p.metadata.deletion_timestamp.is_some()
                                || p.metadata.uid.as_deref() != Some(u.as_str())
                        })
                    })
                },
                self.settle,
            )
            .await;
        failed
    }

    /// Creates pods for `indexes` in batches of 1, 2, 4, … stopping at the first
    /// failure; answers how many were not created.
    async fn create(&self, key: &Key, job: &Job, indexes: &[Option<i32>]) -> usize {
        if indexes.is_empty() {
            return 0;
        }
        let ns = key.namespace.as_str();
        let kind = Kind::pods();
        let me = reference(job);
        let mut made: Vec<String> = Vec::new();
        let mut rest = indexes;
        let mut batch = 1usize;
        let mut failed = false;
        while !rest.is_empty() && !failed {
            let (now, later) = rest.split_at(batch.min(rest.len()));
            rest = later;
            let results = join_all(
                now.iter()
                    .map(|i| self.effects.create(&kind, ns, pod_from_template(job, *i))),
            )
            .await;
            for r in results {
                match r {
                    Ok(pod) => {
                        let name = pod
                            .pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        self.expect(key, |e| {
                            e.creates.insert(name.clone(), Instant::now());
                        });
                        self.events
                            .record(
                                &me,
                                EventType::Normal,
                                "SuccessfulCreate",
                                &format!("Created pod: {name}"),
                            )
                            .await;
                        made.push(name);
                    }
                    Err(e) => {
                        failed = true;
                        self.events
                            .record(
                                &me,
                                EventType::Warning,
                                "FailedCreate",
                                &format!("Error creating: {}", api_message(&e)),
                            )
                            .await;
                    }
                }
            }
            batch *= 2;
        }
        self.caches
            .pods
            .wait_for(|c| made.iter().all(|n| c.get(ns, n).is_some()), self.settle)
            .await;
        indexes.len() - made.len()
    }

    /// Removes the tracking finalizer from a pod whose Job is gone or finished.
    async fn sync_orphan(&self, key: &Key) -> driver::Result<Next> {
        let Some(pod) = self.caches.pods.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        if !has_finalizer(&pod) {
            return Ok(Next::Done);
        }
        if let Some(r) = controller_of(&pod.metadata) {
            if !is_job_ref(r) {
                return Ok(Next::Done);
            }
            let job = self.caches.jobs.get(&key.namespace, &r.name);
            if job.is_some_and(|j| {
                j.metadata.uid.as_deref() == Some(r.uid.as_str()) && !is_finished(&j)
            }) {
                // Its Job counts it.
                return Ok(Next::Done);
            }
        }
        let kind = Kind::pods();
        match self
            .effects
            .merge_patch(&kind, &key.namespace, &key.name, untrack_patch(&pod))
            .await
        {
            Ok(_) => Ok(Next::Done),
            Err(e) if code(&e) == Some(404) => Ok(Next::Done),
            Err(e) if code(&e) == Some(409) => Ok(Next::After(Duration::from_secs(1))),
            Err(e) => Err(driver::api_error("patch", &kind, &key.namespace, &key.name)(e)),
        }
    }
}

impl Reconciler for JobController {
    type Key = Work;

    fn name(&self) -> &'static str {
        "job"
    }

    fn sync<'a>(&'a self, key: &'a Work) -> BoxFuture<'a, driver::Result<Next>> {
        match key {
            Work::Job(k) => Box::pin(self.sync_job(k)),
            Work::Orphan(k) => Box::pin(self.sync_orphan(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{FixedClock, Recording};
    use crate::controllers::driver::Cache;
    use futures::stream;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodSpec,
        PodStatus, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::watcher;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn job(completions: Option<i32>, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("job-uid".into()),
                resource_version: Some("10".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(6),
                completion_mode: Some("NonIndexed".into()),
                suspend: Some(false),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "pi".into())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        containers: vec![k8s_openapi::api::core::v1::Container {
                            name: "c".into(),
                            image: Some("busybox".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn indexed(completions: i32, parallelism: i32) -> Job {
        let mut j = job(Some(completions), parallelism);
        j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        j
    }

    fn with_status(mut j: Job, f: impl FnOnce(&mut JobStatus)) -> Job {
        let mut s = j.status.take().unwrap_or_default();
        f(&mut s);
        j.status = Some(s);
        j
    }

    /// A pod of the Job in `phase`, with the finalizer when `tracked`, finished (or
    /// created) at `at`.
    fn pod(name: &str, phase: &str, tracked: bool, at: i64) -> Pod {
        let finished = matches!(phase, "Succeeded" | "Failed");
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("u-{name}")),
                resource_version: Some("5".into()),
                labels: Some(BTreeMap::from([(CONTROLLER_UID.into(), "job-uid".into())])),
                finalizers: tracked.then(|| vec![TRACKING_FINALIZER.to_string()]),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: "pi".into(),
                    uid: "job-uid".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                creation_timestamp: Some(Time(t(at))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: (phase == "Running").then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                container_statuses: finished.then(|| {
                    vec![ContainerStatus {
                        name: "c".into(),
                        state: Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                finished_at: Some(Time(t(at))),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn at_index(mut p: Pod, i: i32) -> Pod {
        p.metadata.annotations = Some(BTreeMap::from([(COMPLETION_INDEX.into(), i.to_string())]));
        p
    }

    fn decide(j: &Job, pods: Vec<Pod>, now: i64) -> Plan {
        decide_with(j, pods, now, &HashSet::new())
    }

    fn decide_with(j: &Job, pods: Vec<Pod>, now: i64, untracked: &HashSet<String>) -> Plan {
        let pods: Vec<Arc<Pod>> = pods.into_iter().map(Arc::new).collect();
        reconcile(
            j,
            &Observed {
                pods: &pods,
                untracked,
                satisfied: true,
                backoff: Backoff::default(),
                now: t(now),
            },
        )
    }

    /// The status after the plan's finalizer removals all succeed.
    fn settled(plan: &Plan, now: i64) -> (JobStatus, bool) {
        let mut tracked = plan.tracked.clone();
        for (_, uid, _) in &plan.untrack {
            tracked.remove(uid);
        }
        settle(
            plan.status.clone(),
            &tracked,
            plan.finished.as_ref(),
            t(now),
        )
    }

    fn cond<'a>(s: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
        s.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn runs_parallelism_pods_until_completions_succeed() {
        let j = job(Some(5), 2);
        let plan = decide(&j, vec![], 0);
        assert_eq!(plan.create, vec![None, None]);
        assert_eq!(plan.status.active, Some(2));
        assert_eq!(plan.status.start_time, Some(Time(t(0))));
        assert_eq!(plan.status.ready, Some(0));
        assert_eq!(plan.status.terminating, Some(0));

        // Two running: nothing to do.
        let running = vec![pod("a", "Running", true, 1), pod("b", "Running", true, 1)];
        let plan = decide(&j, running, 2);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.status.ready, Some(2));

        // One succeeded: recorded as uncounted, its finalizer goes, a replacement comes.
        let pods = vec![pod("a", "Succeeded", true, 3), pod("b", "Running", true, 1)];
        let plan = decide(&j, pods, 3);
        assert_eq!(plan.create, vec![None]);
        assert_eq!(plan.status.active, Some(2));
        let uncounted = plan.status.uncounted_terminated_pods.clone().unwrap();
        assert_eq!(uncounted.succeeded, Some(vec!["u-a".to_string()]));
        assert_eq!(plan.untrack.len(), 1);
        assert_eq!(plan.untrack[0].2["metadata"]["finalizers"], Value::Null);
        assert_eq!(plan.untrack[0].2["metadata"]["resourceVersion"], "5");
        let (s, done) = settled(&plan, 3);
        assert!(!done);
        assert_eq!(s.succeeded, Some(1));
        assert_eq!(
            s.uncounted_terminated_pods,
            Some(UncountedTerminatedPods::default())
        );

        // Four counted, one running: no more pods (completions left = 1).
        let j4 = with_status(job(Some(5), 2), |s| s.succeeded = Some(4));
        let pods = vec![
            pod("a", "Succeeded", false, 3),
            pod("e", "Running", true, 4),
        ];
        let plan = decide(&j4, pods, 5);
        assert!(plan.create.is_empty() && plan.delete.is_empty());

        // The fifth succeeds: success criteria met, then Complete once counted.
        let pods = vec![pod("e", "Succeeded", true, 6)];
        let plan = decide(&j4, pods, 6);
        assert!(plan.create.is_empty());
        let scm = cond(&plan.status, "SuccessCriteriaMet").unwrap();
        assert_eq!(scm.reason.as_deref(), Some("CompletionsReached"));
        assert_eq!(
            scm.message.as_deref(),
            Some("Reached expected number of succeeded pods")
        );
        assert!(cond(&plan.status, "Complete").is_none());
        let (s, done) = settled(&plan, 6);
        assert!(done);
        assert_eq!(s.succeeded, Some(5));
        assert_eq!(s.active, None);
        assert_eq!(s.completion_time, Some(Time(t(6))));
        let complete = cond(&s, "Complete").unwrap();
        assert_eq!(complete.status, "True");
        assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));
    }

    #[test]
    fn without_completions_the_first_success_ends_the_job_once_the_rest_finish() {
        let j = job(None, 3);
        assert_eq!(decide(&j, vec![], 0).create.len(), 3);
        let pods = vec![
            pod("a", "Succeeded", false, 2),
            pod("b", "Running", true, 1),
            pod("c", "Running", true, 1),
        ];
        let j1 = with_status(job(None, 3), |s| s.succeeded = Some(1));
        let plan = decide(&j1, pods, 3);
        // No replacements after a success, and not complete while others run.
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert!(plan.finished.is_none());
        let pods = vec![pod("b", "Succeeded", true, 4), pod("c", "Failed", true, 4)];
        let plan = decide(&j1, pods, 5);
        let (s, done) = settled(&plan, 5);
        assert!(done, "{s:?}");
        assert_eq!((s.succeeded, s.failed), (Some(2), Some(1)));
    }

    #[test]
    fn failures_back_off_then_exceed_the_backoff_limit() {
        // One failure 3 s ago: the replacement waits for the rest of 10 s.
        let j = job(Some(1), 1);
        let plan = decide(&j, vec![pod("a", "Failed", true, 0)], 3);
        assert!(plan.create.is_empty());
        assert_eq!(plan.requeue, Some(Duration::from_secs(7)));
        let (s, _) = settled(&plan, 3);
        assert_eq!(s.failed, Some(1));
        assert_eq!(
            plan.backoff,
            Backoff {
                failures: 1,
                last_failure: Some(t(0))
            }
        );
        // The record outlives the pod: a second failure doubles the wait.
        let b = plan.backoff.after(&[], &[&pod("b", "Failed", true, 20)]);
        assert_eq!(b.remaining(t(25)), Duration::from_secs(15));
        assert_eq!(b.remaining(t(45)), Duration::ZERO);
        let mut j1 = j.clone();
        j1.status = Some(s);
        let pods: Vec<Arc<Pod>> = vec![];
        let replan = reconcile(
            &j1,
            &Observed {
                pods: &pods,
                untracked: &HashSet::new(),
                satisfied: true,
                backoff: b,
                now: t(25),
            },
        );
        assert!(replan.create.is_empty());
        assert_eq!(replan.requeue, Some(Duration::from_secs(15)));
        // A success since resets it, but for failures after that success.
        let b = b.after(
            &[&pod("c", "Succeeded", true, 30)],
            &[&pod("d", "Failed", true, 31)],
        );
        assert_eq!(
            b,
            Backoff {
                failures: 1,
                last_failure: Some(t(31))
            }
        );
        let many = Backoff {
            failures: 40,
            last_failure: Some(t(0)),
        };
        assert_eq!(many.remaining(t(0)), Duration::from_secs(600));

        // Over the limit: FailureTarget, the active pod goes and counts as failed.
        let mut j = with_status(job(Some(3), 1), |s| s.failed = Some(1));
        j.spec.as_mut().unwrap().backoff_limit = Some(1);
        let pods = vec![pod("b", "Failed", true, 5), pod("c", "Running", true, 6)];
        let plan = decide(&j, pods, 7);
        let target = cond(&plan.status, "FailureTarget").unwrap();
        assert_eq!(target.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(
            target.message.as_deref(),
            Some("Job has reached the specified backoff limit")
        );
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].name, "c");
        assert!(plan.delete[0].untrack.is_none());
        assert_eq!(plan.status.terminating, Some(1));
        assert_eq!(plan.untrack.len(), 2);
        // Not Failed while the deleted pod terminates.
        let (s, done) = settled(&plan, 7);
        assert!(!done);
        assert_eq!(s.failed, Some(3));
        // Next sync: the pod is gone; the Job fails.
        let j = Job {
            status: Some(s),
            ..j
        };
        let plan = decide(&j, vec![pod("b", "Failed", false, 5)], 8);
        assert!(plan.delete.is_empty());
        let (s, done) = settled(&plan, 8);
        assert!(done);
        let failed = cond(&s, "Failed").unwrap();
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(s.completion_time, None);
    }

    #[test]
    fn the_active_deadline_fails_the_job_and_is_waited_for() {
        let mut j = with_status(job(Some(1), 1), |s| s.start_time = Some(Time(t(0))));
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(10);
        let plan = decide(&j, vec![pod("a", "Running", true, 1)], 4);
        assert_eq!(plan.requeue, Some(Duration::from_secs(6)));
        assert!(plan.finished.is_none());
        let plan = decide(&j, vec![pod("a", "Running", true, 1)], 10);
        let target = cond(&plan.status, "FailureTarget").unwrap();
        assert_eq!(target.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(
            target.message.as_deref(),
            Some("Job was active longer than specified deadline")
        );
        assert_eq!(plan.delete[0].name, "a");
        assert_eq!(plan.finished.as_ref().unwrap().type_, "Failed");
        // A suspended Job's clock does not run.
        j.spec.as_mut().unwrap().suspend = Some(true);
        assert!(decide(&j, vec![], 100).finished.is_none());
    }

    #[test]
    fn indexed_jobs_run_each_index_once_and_report_completed_indexes() {
        let j = with_status(indexed(5, 2), |s| s.completed_indexes = Some("0-2".into()));
        let plan = decide(&j, vec![at_index(pod("d", "Running", true, 1), 4)], 2);
        assert_eq!(plan.create, vec![Some(3)]);
        assert_eq!(plan.status.succeeded, Some(3));

        // A repeated index keeps its most advanced pod; a pod without index goes.
        let mut pending = at_index(pod("dup", "Pending", true, 2), 4);
        pending.status.as_mut().unwrap().conditions = None;
        let pods = vec![
            at_index(pod("d", "Running", true, 1), 4),
            pending,
            pod("stray", "Running", true, 1),
        ];
        let plan = decide(&j, pods, 3);
        let mut gone: Vec<&str> = plan.delete.iter().map(|v| v.name.as_str()).collect();
        gone.sort();
        assert_eq!(gone, ["dup", "stray"]);
        assert!(plan.create.is_empty());

        // Index 4 succeeds: recorded in completedIndexes, not as an uncounted uid.
        let pods = vec![
            at_index(pod("d", "Succeeded", true, 4), 4),
            at_index(pod("c", "Running", true, 3), 3),
        ];
        let plan = decide(&j, pods, 5);
        assert_eq!(plan.status.completed_indexes.as_deref(), Some("0-2,4"));
        assert_eq!(plan.status.succeeded, Some(4));
        assert_eq!(
            plan.status.uncounted_terminated_pods,
            Some(UncountedTerminatedPods::default())
        );
        assert_eq!(plan.untrack.len(), 1);

        let mut set = BTreeSet::from([3, 4]);
        assert_eq!(format_indexes(&set), "3,4");
        set.extend([0, 1, 7]);
        assert_eq!(format_indexes(&set), "0,1,3,4,7");
        assert_eq!(parse_indexes("0-2,4,9", 5), BTreeSet::from([0, 1, 2, 4]));

        let p = pod_from_template(&indexed(5, 2), Some(3));
        assert_eq!(p["metadata"]["generateName"], "pi-3-");
        assert_eq!(p["metadata"]["annotations"][COMPLETION_INDEX], "3");
        assert_eq!(p["metadata"]["labels"][COMPLETION_INDEX], "3");
        assert_eq!(p["spec"]["hostname"], "pi-3");
        assert_eq!(
            p["spec"]["containers"][0]["env"][0],
            json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
        );
    }

    #[test]
    fn pods_carry_the_jobs_labels_finalizer_and_controller_reference() {
        let p = pod_from_template(&job(Some(1), 1), None);
        assert_eq!(p["metadata"]["generateName"], "pi-");
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["app"], "pi");
        assert_eq!(labels[CONTROLLER_UID], "job-uid");
        assert_eq!(labels[JOB_NAME], "pi");
        assert_eq!(labels["controller-uid"], "job-uid");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(p["metadata"]["finalizers"], json!([TRACKING_FINALIZER]));
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(generate_name(&"x".repeat(70), Some(12)).len(), 58);
    }

    #[test]
    fn a_finished_job_lives_until_its_ttl() {
        let mut j = with_status(job(Some(1), 1), |s| {
            s.conditions = Some(vec![new_condition(
                COMPLETE,
                "True",
                "CompletionsReached",
                "m",
                t(0),
            )]);
        });
        assert_eq!(
            decide(&j, vec![], 50),
            Plan {
                status: j.status.clone().unwrap(),
                ..Default::default()
            }
        );
        j.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(10);
        let plan = decide(&j, vec![], 4);
        assert!(!plan.delete_job);
        assert_eq!(plan.requeue, Some(Duration::from_secs(6)));
        assert!(decide(&j, vec![], 10).delete_job);
    }

    #[test]
    fn suspending_deletes_active_pods_uncounted_and_resuming_restarts_the_clock() {
        let mut j = job(Some(4), 2);
        j.spec.as_mut().unwrap().suspend = Some(true);
        let pods = vec![pod("a", "Running", true, 1), pod("b", "Pending", true, 1)];
        let plan = decide(&j, pods, 5);
        assert_eq!(plan.delete.len(), 2);
        assert!(plan.delete.iter().all(|v| v.untrack.is_some()));
        assert!(plan.untrack.is_empty());
        let s = cond(&plan.status, "Suspended").unwrap();
        assert_eq!(
            (s.status.as_str(), s.reason.as_deref()),
            ("True", Some("JobSuspended"))
        );
        assert_eq!(
            plan.events,
            vec![(EventType::Normal, "Suspended", "Job suspended".to_string())]
        );
        assert_eq!(plan.status.start_time, None);
        assert_eq!(plan.status.failed, None);

        let j = Job {
            status: Some(plan.status.clone()),
            ..job(Some(4), 2)
        };
        let plan = decide(&j, vec![], 9);
        let s = cond(&plan.status, "Suspended").unwrap();
        assert_eq!(
            (s.status.as_str(), s.reason.as_deref()),
            ("False", Some("JobResumed"))
        );
        assert_eq!(plan.events[0].1, "Resumed");
        assert_eq!(plan.status.start_time, Some(Time(t(9))));
        assert_eq!(plan.create.len(), 2);
    }

    #[test]
    fn a_pod_is_counted_once_even_when_the_cache_lags() {
        // Already counted; the cache still shows the finalizer this controller removed.
        let j = with_status(job(Some(3), 1), |s| s.succeeded = Some(1));
        let stale = vec![pod("a", "Succeeded", true, 1)];
        let plan = decide_with(&j, stale, 2, &HashSet::from(["u-a".to_string()]));
        assert!(plan.untrack.is_empty());
        assert_eq!(plan.status.succeeded, Some(1));
        assert_eq!(
            plan.status.uncounted_terminated_pods,
            Some(UncountedTerminatedPods::default())
        );
        // A uid still uncounted whose pod is gone is counted now.
        let j = with_status(job(Some(3), 1), |s| {
            s.uncounted_terminated_pods = Some(UncountedTerminatedPods {
                succeeded: Some(vec!["u-gone".into()]),
                failed: Some(vec!["u-lost".into()]),
            });
        });
        let plan = decide(&j, vec![], 2);
        assert_eq!(
            (plan.status.succeeded, plan.status.failed),
            (Some(1), Some(1))
        );
        // A deleted pod that had not succeeded counts as failed.
        let mut gone = pod("b", "Running", true, 1);
        gone.metadata.deletion_timestamp = Some(Time(t(2)));
        let plan = decide(&job(Some(3), 1), vec![gone], 3);
        assert_eq!(
            plan.status.uncounted_terminated_pods.unwrap().failed,
            Some(vec!["u-b".to_string()])
        );
        assert_eq!(plan.status.terminating, Some(1));
    }

    #[test]
    fn claims_matching_orphans_and_releases_pods_that_stopped_matching() {
        let mut j = job(Some(1), 1);
        j.spec.as_mut().unwrap().selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "pi".into())])),
            ..Default::default()
        });
        let mut orphan = pod("o", "Running", false, 1);
        orphan.metadata.owner_references = None;
        orphan.metadata.labels = Some(BTreeMap::from([("app".into(), "pi".into())]));
        let strayed = pod("s", "Running", true, 1); // no app=pi label
        let plan = decide(&j, vec![orphan, strayed], 2);
        assert_eq!(plan.claims.len(), 2);
        let claim = |n: &str| &plan.claims.iter().find(|(p, _)| p == n).unwrap().1;
        assert_eq!(claim("s")["metadata"]["ownerReferences"], json!([]));
        let adopt = claim("o");
        assert_eq!(adopt["metadata"]["ownerReferences"][0]["uid"], "job-uid");
        assert_eq!(adopt["metadata"]["finalizers"], json!([TRACKING_FINALIZER]));
        // The adopted pod counts as the one active pod.
        assert!(plan.create.is_empty());
        assert_eq!(plan.status.active, Some(1));
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

    fn controller(fx: Arc<Recording>) -> (Arc<JobController>, Arc<Caches>) {
        let caches = Arc::new(Caches::new());
        let clock = Arc::new(FixedClock(Mutex::new(t(0))));
        let events = Arc::new(Recorder::new(fx.clone(), clock.clone(), "job-controller"));
        (
            JobController::new(caches.clone(), fx, clock, events),
            caches,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn driver_creates_pods_writes_status_and_frees_orphans() {
        let fx = Arc::new(Recording::default());
        let (c, caches) = controller(fx.clone());
        let queue = Queue::new();
        JobController::watch(&caches, &queue);
        feed(&caches.jobs, vec![job(Some(5), 2)]).await;
        let mut orphan = pod("left", "Succeeded", true, 1);
        orphan.metadata.owner_references.as_mut().unwrap()[0].uid = "old-uid".into();
        feed(&caches.pods, vec![orphan]).await;

        let mut keys = vec![queue.next().await, queue.next().await];
        keys.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(
            keys[0],
            Work::Job(Key {
                namespace: "default".into(),
                name: "pi".into()
            })
        );
        assert_eq!(
            keys[1],
            Work::Orphan(Key {
                namespace: "default".into(),
                name: "left".into()
            })
        );
        for k in &keys {
            c.sync(k).await.unwrap();
        }
        let calls = fx.calls();
        let creates: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with("create Pod"))
            .collect();
        assert_eq!(creates.len(), 2, "{calls:#?}");
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("create Event default/pi.")),
            "{calls:#?}"
        );
        let status = calls
            .iter()
            .find(|c| c.starts_with("status Job default/pi"))
            .unwrap();
        assert!(status.contains(r#""active":2"#), "{status}");
        assert!(
            status.contains(r#""uncountedTerminatedPods":{}"#),
            "{status}"
        );
        assert!(
            calls.contains(
                &r#"patch Pod default/left {"metadata":{"resourceVersion":"5","finalizers":null}}"#
                    .to_string()
            ),
            "{calls:#?}"
        );
    }
}
