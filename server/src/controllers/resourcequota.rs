//! The ResourceQuota controller: keeps each quota's `status.hard` (a copy of
//! `spec.hard`) and `status.used` (what the namespace holds of each resource it limits),
//! so `kubectl describe quota` shows Used against Hard.
//!
//! Usage is measured as upstream's evaluators measure it, over the shared caches:
//!
//! * pods: `pods` and the compute resources (`cpu`, `memory`, `ephemeral-storage`, their
//!   `requests.*`/`limits.*` forms, hugepages, `requests.<extended>`) over pods that have
//!   not finished (nor outlived their deletion grace period), `count/pods` over all
//!   pods; quota scopes (`Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`,
//!   `PriorityClass`, `CrossNamespacePodAffinity`, and `scopeSelector`) pick the pods;
//! * services: `services`, `services.nodeports`, `services.loadbalancers`;
//! * persistentvolumeclaims: the count, `requests.storage`, and both per storage class;
//! * `count/<resource>.<group>` for the other namespaced kinds the caches hold
//!   ([`COUNTED`]), and the legacy `resourcequotas`.
//!
//! ConfigMaps, Secrets, ReplicationControllers and other kinds outside the caches are not
//! measured: their `used` is left as it was (absent, which kubectl shows as 0).
//! Enforcement (refusing a create that would exceed a quota) belongs to admission in the
//! API server and is not done here.
//!
//! Quantities are summed and written in upstream's canonical form (`300m`, `192Mi`,
//! `1k`), keeping the format of the first value added, as upstream's `Quantity.Add` does.

use super::driver::{self, Caches, Effects, Key, Kind, Next, Queue, Reconciler};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodSpec, ResourceQuota, ResourceQuotaStatus, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Resources counted as `count/<resource>` from the caches (besides pods, services and
/// persistentvolumeclaims, which their own evaluators count).
pub const COUNTED: &[&str] = &[
    "replicasets.apps",
    "deployments.apps",
    "daemonsets.apps",
    "statefulsets.apps",
    "controllerrevisions.apps",
    "jobs.batch",
    "cronjobs.batch",
    "leases.coordination.k8s.io",
    "endpoints",
    "endpointslices.discovery.k8s.io",
    "serviceaccounts",
    "poddisruptionbudgets.policy",
    "resourcequotas",
];

/// When to look again after a status write lost a race.
const RETRY: Duration = Duration::from_millis(250);

const NANO: i128 = 1_000_000_000;

/// How a quantity is written (upstream's three formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1000 with SI suffixes (`m`, `k`, `M`…), or none.
    DecimalSI,
    /// Powers of 1024 (`Ki`, `Mi`…).
    BinarySI,
    /// `e<exponent>`.
    DecimalExponent,
}

/// A quantity as an exact number of nano-units and the format it is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    nanos: i128,
    format: Format,
}

impl Amount {
    /// Zero, written `0`.
    pub const ZERO: Amount = Amount {
        nanos: 0,
        format: Format::DecimalSI,
    };

    /// A whole count.
    pub fn count(n: usize) -> Amount {
        Amount {
            nanos: i128::try_from(n).unwrap_or(i128::MAX / NANO) * NANO,
            format: Format::DecimalSI,
        }
    }

    /// Parses a quantity (`100m`, `1.5Gi`, `2e3`, `128974848`); `None` when it is not
    /// one. Precision below a nano-unit is rounded up.
    pub fn parse(s: &str) -> Option<Amount> {
        let s = s.trim();
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let (format, exp10, pow1024): (Format, i32, u32) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            "Ki" => (Format::BinarySI, 0, 1),
            "Mi" => (Format::BinarySI, 0, 2),
            "Gi" => (Format::BinarySI, 0, 3),
            "Ti" => (Format::BinarySI, 0, 4),
            "Pi" => (Format::BinarySI, 0, 5),
            "Ei" => (Format::BinarySI, 0, 6),
            e if e.starts_with(['e', 'E']) => (Format::DecimalExponent, e[1..].parse().ok()?, 0),
            _ => return None,
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let mut mantissa: i128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .saturating_mul(10)
                .saturating_add(i128::from(c - b'0'));
        }
        if pow1024 > 0 {
            mantissa = mantissa.saturating_mul(1i128 << (10 * pow1024));
        }
        let exp = exp10 - i32::try_from(frac_part.len()).ok()? + 9;
        let nanos = if exp >= 0 {
            if exp > 38 {
                if mantissa == 0 {
                    0
                } else {
                    i128::MAX
                }
            } else {
                mantissa.saturating_mul(10i128.pow(exp.unsigned_abs()))
            }
        } else if exp < -38 {
            i128::from(mantissa != 0)
        } else {
            let d = 10i128.pow(exp.unsigned_abs());
            mantissa / d + i128::from(mantissa % d != 0)
        };
        Some(Amount {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// Reads an API quantity; an unreadable one counts as zero.
    pub fn of(q: &Quantity) -> Amount {
        Amount::parse(&q.0).unwrap_or(Amount::ZERO)
    }

    /// Adds `other`; a zero takes the other's format (as upstream's `Quantity.Add`).
    pub fn add(&mut self, other: Amount) {
        if self.nanos == 0 {
            self.format = other.format;
        }
        self.nanos = self.nanos.saturating_add(other.nanos);
    }

    /// Keeps the larger of `self` and `other`.
    fn max_with(&mut self, other: Amount) {
        if other.nanos > self.nanos {
            *self = other;
        }
    }

    /// As an API quantity.
    pub fn quantity(self) -> Quantity {
        Quantity(self.to_string())
    }
}

impl fmt::Display for Amount {
    /// Upstream's canonical form: the largest suffix that keeps the number whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let nano = NANO.unsigned_abs();
        if self.format == Format::BinarySI && abs >= 1024 * nano && abs.is_multiple_of(nano) {
            let mut units = abs / nano;
            let mut exp = 0;
            while exp < 6 && units.is_multiple_of(1024) {
                units /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return write!(f, "{sign}{units}{suffix}");
        }
        // Base 10: strip zeros, then step down to an exponent that is a multiple of 3.
        let (mut m, mut exp) = (abs, -9i32);
        while m % 10 == 0 {
            m /= 10;
            exp += 1;
        }
        let r = exp.rem_euclid(3);
        m = m.saturating_mul(10u128.pow(r.unsigned_abs()));
        exp -= r;
        if self.format == Format::DecimalExponent {
            return if exp == 0 {
                write!(f, "{sign}{m}")
            } else {
                write!(f, "{sign}{m}e{exp}")
            };
        }
        if exp > 18 {
            m = m.saturating_mul(10u128.pow((exp - 18).unsigned_abs()));
            exp = 18;
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => "",
        };
        write!(f, "{sign}{m}{suffix}")
    }
}

/// Resource name → amount.
pub type Usage = BTreeMap<String, Amount>;

fn add_all(total: &mut Usage, more: &Usage) {
    for (k, v) in more {
        total.entry(k.clone()).or_insert(Amount::ZERO).add(*v);
    }
}

fn max_all(total: &mut Usage, more: &Usage) {
    for (k, v) in more {
        match total.get_mut(k) {
            Some(have) => have.max_with(*v),
            None => {
                total.insert(k.clone(), *v);
            }
        }
    }
}

fn read(map: Option<&BTreeMap<String, Quantity>>) -> Usage {
    map.into_iter()
        .flatten()
        .map(|(k, q)| (k.clone(), Amount::of(q)))
        .collect()
}

fn requests_of(c: &Container) -> Usage {
    read(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

fn limits_of(c: &Container) -> Usage {
    read(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
}

/// A pod's requests or limits as upstream sums them: containers and sidecars together,
/// each ordinary init container with the sidecars started before it, the larger of the
/// two; pod-level values replace the containers' for cpu and memory.
fn pod_totals(
    spec: &PodSpec,
    of: fn(&Container) -> Usage,
    pod_level: Option<&BTreeMap<String, Quantity>>,
) -> Usage {
    let mut total = Usage::new();
    for c in &spec.containers {
        add_all(&mut total, &of(c));
    }
    let mut sidecars = Usage::new();
    let mut init = Usage::new();
    for c in spec.init_containers.iter().flatten() {
        let mut r = of(c);
        if c.restart_policy.as_deref() == Some("Always") {
            add_all(&mut total, &r);
            add_all(&mut sidecars, &r);
            r = sidecars.clone();
        } else {
            add_all(&mut r, &sidecars);
        }
        max_all(&mut init, &r);
    }
    max_all(&mut total, &init);
    for (k, q) in pod_level.into_iter().flatten() {
        if k == "cpu" || k == "memory" {
            total.insert(k.clone(), Amount::of(q));
        }
    }
    total
}

/// What a pod requests, overhead included.
pub fn pod_requests(spec: &PodSpec) -> Usage {
    let level = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut total = pod_totals(spec, requests_of, level);
    add_all(&mut total, &read(spec.overhead.as_ref()));
    total
}

/// A pod's limits, overhead added to those that are set.
pub fn pod_limits(spec: &PodSpec) -> Usage {
    let level = spec.resources.as_ref().and_then(|r| r.limits.as_ref());
    let mut total = pod_totals(spec, limits_of, level);
    for (k, v) in read(spec.overhead.as_ref()) {
        if let Some(have) = total.get_mut(&k) {
            have.add(v);
        }
    }
    total
}

/// When a pod stops counting towards compute resources even if nothing else changes:
/// at the end of its deletion grace period.
fn compute_deadline(pod: &Pod) -> Option<jiff::Timestamp> {
    let at = pod.metadata.deletion_timestamp.as_ref()?.0;
    let grace = pod.metadata.deletion_grace_period_seconds?;
    Some(at + jiff::SignedDuration::from_secs(grace))
}

/// Whether a pod counts towards `pods` and compute resources (upstream's `QuotaV1Pod`).
pub fn counts_for_compute(pod: &Pod, now: jiff::Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    compute_deadline(pod).is_none_or(|d| now <= d)
}

fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// What one pod uses, under every name a quota may limit.
pub fn pod_usage(pod: &Pod, now: jiff::Timestamp) -> Usage {
    let mut u = Usage::from([("count/pods".to_string(), Amount::count(1))]);
    let Some(spec) = pod.spec.as_ref().filter(|_| counts_for_compute(pod, now)) else {
        return u;
    };
    u.insert("pods".into(), Amount::count(1));
    let requests = pod_requests(spec);
    let limits = pod_limits(spec);
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(r) = requests.get(name) {
            u.insert(name.into(), *r);
            u.insert(format!("requests.{name}"), *r);
        }
        if let Some(l) = limits.get(name) {
            u.insert(format!("limits.{name}"), *l);
        }
    }
    for (name, r) in &requests {
        if name.starts_with("hugepages-") {
            u.insert(name.clone(), *r);
            u.insert(format!("requests.{name}"), *r);
        }
        if !is_native(name) && !name.starts_with("requests.") {
            u.insert(format!("requests.{name}"), *r);
        }
    }
    u
}

/// What one Service uses.
pub fn service_usage(svc: &Service) -> Usage {
    let mut u = Usage::from([
        ("services".to_string(), Amount::count(1)),
        ("count/services".to_string(), Amount::count(1)),
    ]);
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    match spec.and_then(|s| s.type_.as_deref()) {
        Some("NodePort") => {
            u.insert("services.nodeports".into(), Amount::count(ports.len()));
        }
        Some("LoadBalancer") => {
            let allocate = spec.and_then(|s| s.allocate_load_balancer_node_ports) != Some(false);
            let n = if allocate {
                ports.len()
            } else {
                ports
                    .iter()
                    .filter(|p| p.node_port.unwrap_or(0) != 0)
                    .count()
            };
            u.insert("services.nodeports".into(), Amount::count(n));
            u.insert("services.loadbalancers".into(), Amount::count(1));
        }
        _ => {}
    }
    u
}

/// What one PersistentVolumeClaim uses (its storage: the larger of requested and
/// allocated).
pub fn pvc_usage(pvc: &PersistentVolumeClaim) -> Usage {
    let mut u = Usage::from([
        ("persistentvolumeclaims".to_string(), Amount::count(1)),
        ("count/persistentvolumeclaims".to_string(), Amount::count(1)),
    ]);
    let spec = pvc.spec.as_ref();
    let class = pvc
        .annotations()
        .get("volume.beta.kubernetes.io/storage-class")
        .cloned()
        .or_else(|| spec.and_then(|s| s.storage_class_name.clone()))
        .filter(|c| !c.is_empty());
    let requested = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(Amount::of);
    let allocated = pvc
        .status
        .as_ref()
        .and_then(|s| s.allocated_resources.as_ref())
        .and_then(|r| r.get("storage"))
        .map(Amount::of);
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) if a.nanos > r.nanos => Some(a),
        (r, a) => r.or(a),
    };
    if let Some(class) = &class {
        u.insert(
            format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            Amount::count(1),
        );
    }
    if let Some(s) = storage {
        u.insert("requests.storage".into(), s);
        if let Some(class) = &class {
            u.insert(
                format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                s,
            );
        }
    }
    u
}

/// Which measure a quota's resource name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evaluator {
    /// Pods and their compute resources.
    Pods,
    /// Services.
    Services,
    /// PersistentVolumeClaims.
    Pvcs,
    /// A plain object count of the named resource (one of [`COUNTED`]).
    Count(&'static str),
}

/// The measure of a resource name, `None` when it is not measured here.
pub fn evaluator(name: &str) -> Option<Evaluator> {
    const SC: &str = ".storageclass.storage.k8s.io/";
    match name {
        "pods"
        | "count/pods"
        | "cpu"
        | "memory"
        | "ephemeral-storage"
        | "requests.cpu"
        | "requests.memory"
        | "requests.ephemeral-storage"
        | "limits.cpu"
        | "limits.memory"
        | "limits.ephemeral-storage" => Some(Evaluator::Pods),
        "services" | "count/services" | "services.nodeports" | "services.loadbalancers" => {
            Some(Evaluator::Services)
        }
        "persistentvolumeclaims" | "count/persistentvolumeclaims" | "requests.storage" => {
            Some(Evaluator::Pvcs)
        }
        "resourcequotas" => Some(Evaluator::Count("resourcequotas")),
        n if n.contains(SC)
            && (n.ends_with("/requests.storage") || n.ends_with("/persistentvolumeclaims")) =>
        {
            Some(Evaluator::Pvcs)
        }
        n if n.starts_with("hugepages-") || n.starts_with("requests.hugepages-") => {
            Some(Evaluator::Pods)
        }
        n if n.starts_with("requests.") && !is_native(n) => Some(Evaluator::Pods),
        n => {
            let r = n.strip_prefix("count/")?;
            COUNTED
                .iter()
                .find(|c| **c == r)
                .map(|c| Evaluator::Count(c))
        }
    }
}

/// Whether a quota limits anything `e` measures.
pub fn tracks(quota: &ResourceQuota, e: Evaluator) -> bool {
    quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.as_ref())
        .is_some_and(|h| h.keys().any(|k| evaluator(k) == Some(e)))
}

fn is_best_effort(spec: &PodSpec) -> bool {
    let sets = |r: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| {
        r.is_some_and(|r| {
            [r.requests.as_ref(), r.limits.as_ref()]
                .into_iter()
                .flatten()
                .flatten()
                .any(|(k, q)| (k == "cpu" || k == "memory") && Amount::of(q).nanos > 0)
        })
    };
    let pod_level = sets(spec.resources.as_ref());
    !pod_level
        && !spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| sets(c.resources.as_ref()))
}

fn cross_namespace_affinity(spec: &PodSpec) -> bool {
    use k8s_openapi::api::core::v1::PodAffinityTerm;
    let crosses = |t: &PodAffinityTerm| {
        t.namespace_selector.is_some() || t.namespaces.as_ref().is_some_and(|n| !n.is_empty())
    };
    let Some(a) = spec.affinity.as_ref() else {
        return false;
    };
    let affinity = a.pod_affinity.as_ref().is_some_and(|p| {
        p.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .any(crosses)
            || p.preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .any(|w| crosses(&w.pod_affinity_term))
    });
    let anti = a.pod_anti_affinity.as_ref().is_some_and(|p| {
        p.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .any(crosses)
            || p.preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .any(|w| crosses(&w.pod_affinity_term))
    });
    affinity || anti
}

/// Whether a pod falls under one scope requirement.
fn scope_matches(scope: &str, operator: &str, values: &[String], pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let terminating = spec.active_deadline_seconds.is_some_and(|s| s >= 0);
    match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => is_best_effort(spec),
        "NotBestEffort" => !is_best_effort(spec),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(spec),
        "PriorityClass" => {
            let class = spec.priority_class_name.as_deref().unwrap_or("");
            match operator {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            }
        }
        _ => false,
    }
}

/// A quota's scope requirements: its `scopes` (as `Exists`) and its `scopeSelector`.
fn scope_requirements(quota: &ResourceQuota) -> Vec<(String, String, Vec<String>)> {
    let spec = quota.spec.as_ref();
    let mut out: Vec<(String, String, Vec<String>)> = spec
        .and_then(|s| s.scopes.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.clone(), "Exists".to_string(), Vec::new()))
        .collect();
    for r in spec
        .and_then(|s| s.scope_selector.as_ref())
        .and_then(|s| s.match_expressions.as_ref())
        .into_iter()
        .flatten()
    {
        out.push((
            r.scope_name.clone(),
            r.operator.clone(),
            r.values.clone().unwrap_or_default(),
        ));
    }
    out
}

/// What a quota sync sees besides the quota: the objects of its namespace.
pub struct Observed<'a> {
    /// Pods.
    pub pods: &'a [Arc<Pod>],
    /// Services.
    pub services: &'a [Arc<Service>],
    /// PersistentVolumeClaims.
    pub pvcs: &'a [Arc<PersistentVolumeClaim>],
    /// How many objects of a [`COUNTED`] resource there are.
    pub count: &'a dyn Fn(&str) -> usize,
    /// Now.
    pub now: jiff::Timestamp,
}

/// What a quota sync decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write, when it differs from the quota's.
    pub status: Option<ResourceQuotaStatus>,
    /// Look again after this long (a pod stops counting when its grace period ends).
    pub requeue: Option<Duration>,
}

/// Decides one sync of `quota`.
pub fn reconcile(quota: &ResourceQuota, observed: &Observed<'_>) -> Decision {
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let requirements = scope_requirements(quota);
    let scoped = !requirements.is_empty();
    let wanted: BTreeMap<&str, Evaluator> = hard
        .keys()
        .filter_map(|k| Some((k.as_str(), evaluator(k)?)))
        .collect();
    let needs = |e: Evaluator| wanted.values().any(|w| *w == e);

    let mut measured: BTreeMap<Evaluator, Usage> = BTreeMap::new();
    let mut requeue: Option<Duration> = None;
    if needs(Evaluator::Pods) {
        let mut total = Usage::new();
        for pod in observed.pods.iter().filter(|p| {
            requirements
                .iter()
                .all(|(s, op, v)| scope_matches(s, op, v, p))
        }) {
            add_all(&mut total, &pod_usage(pod, observed.now));
            if let Some(d) = compute_deadline(pod).filter(|d| *d >= observed.now) {
                let wait = d.duration_since(observed.now).unsigned_abs() + Duration::from_secs(1);
                requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
            }
        }
        measured.insert(Evaluator::Pods, total);
    }
    // Scopes select pods only: under a scoped quota nothing else is counted.
    if needs(Evaluator::Services) && !scoped {
        let mut total = Usage::new();
        for s in observed.services {
            add_all(&mut total, &service_usage(s));
        }
        measured.insert(Evaluator::Services, total);
    }
    if needs(Evaluator::Pvcs) && !scoped {
        let mut total = Usage::new();
        for p in observed.pvcs {
            add_all(&mut total, &pvc_usage(p));
        }
        measured.insert(Evaluator::Pvcs, total);
    }

    // Resources not measured here keep what the status said.
    let mut used: BTreeMap<String, Quantity> = quota
        .status
        .as_ref()
        .and_then(|s| s.used.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| hard.contains_key(k))
        .collect();
    for (name, e) in wanted {
        let amount = match e {
            Evaluator::Count(resource) if !scoped => Amount::count((observed.count)(resource)),
            Evaluator::Count(_) => Amount::ZERO,
            e => measured
                .get(&e)
                .and_then(|u| u.get(name))
                .copied()
                .unwrap_or(Amount::ZERO),
        };
        used.insert(name.to_string(), amount.quantity());
    }

    let status = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    };
    let current = quota.status.clone().unwrap_or_default();
    let same = current.hard.unwrap_or_default() == status.hard.clone().unwrap_or_default()
        && current.used.unwrap_or_default() == status.used.clone().unwrap_or_default();
    Decision {
        status: (!same).then_some(status),
        requeue,
    }
}

/// Registers the controller's hooks and returns its workers (5, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    ResourceQuotaController::watch(&ctx.caches, &queue);
    let controller =
        ResourceQuotaController::new(ctx.caches.clone(), ctx.effects.clone(), ctx.clock.clone());
    ctx.workers(controller, queue, 5)
}

/// The controller: caches in, status writes out.
pub struct ResourceQuotaController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn driver::Clock>,
}

/// Queues the quotas of a changed object's namespace that measure what it is.
fn hook<K>(caches: &Caches, cache: &driver::Cache<K>, queue: &Arc<Queue<Key>>, e: Evaluator)
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (q, quotas) = (queue.clone(), caches.resourcequotas.clone());
    cache.on_change(Box::new(move |obj: &K, _| {
        let ns = obj.meta().namespace.as_deref().unwrap_or("");
        for quota in quotas.in_namespace(ns) {
            if tracks(&quota, e) {
                q.add(Key::of(&quota.metadata));
            }
        }
    }));
}

impl ResourceQuotaController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn driver::Clock>,
    ) -> Arc<Self> {
        Arc::new(ResourceQuotaController {
            caches,
            effects,
            clock,
        })
    }

    /// Registers the cache hooks that fill `queue`: a quota's own changes, and changes
    /// of what it measures in its namespace.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        caches
            .resourcequotas
            .on_change(Box::new(move |quota: &ResourceQuota, change| {
                if change == driver::Change::Applied {
                    q.add(Key::of(&quota.metadata));
                }
            }));
        hook(caches, &caches.pods, queue, Evaluator::Pods);
        hook(caches, &caches.services, queue, Evaluator::Services);
        hook(caches, &caches.pvcs, queue, Evaluator::Pvcs);
        hook(
            caches,
            &caches.replicasets,
            queue,
            Evaluator::Count("replicasets.apps"),
        );
        hook(
            caches,
            &caches.deployments,
            queue,
            Evaluator::Count("deployments.apps"),
        );
        hook(
            caches,
            &caches.daemonsets,
            queue,
            Evaluator::Count("daemonsets.apps"),
        );
        hook(
            caches,
            &caches.statefulsets,
            queue,
            Evaluator::Count("statefulsets.apps"),
        );
        hook(
            caches,
            &caches.controllerrevisions,
            queue,
            Evaluator::Count("controllerrevisions.apps"),
        );
        hook(caches, &caches.jobs, queue, Evaluator::Count("jobs.batch"));
        hook(
            caches,
            &caches.cronjobs,
            queue,
            Evaluator::Count("cronjobs.batch"),
        );
        hook(
            caches,
            &caches.leases,
            queue,
            Evaluator::Count("leases.coordination.k8s.io"),
        );
        hook(
            caches,
            &caches.endpoints,
            queue,
            Evaluator::Count("endpoints"),
        );
        hook(
            caches,
            &caches.endpointslices,
            queue,
            Evaluator::Count("endpointslices.discovery.k8s.io"),
        );
        hook(
            caches,
            &caches.serviceaccounts,
            queue,
            Evaluator::Count("serviceaccounts"),
        );
        hook(
            caches,
            &caches.pdbs,
            queue,
            Evaluator::Count("poddisruptionbudgets.policy"),
        );
        hook(
            caches,
            &caches.resourcequotas,
            queue,
            Evaluator::Count("resourcequotas"),
        );
    }

    /// How many objects of a [`COUNTED`] resource `ns` holds.
    fn count(&self, ns: &str, resource: &str) -> usize {
        let c = &self.caches;
        match resource {
            "replicasets.apps" => c.replicasets.in_namespace(ns).len(),
            "deployments.apps" => c.deployments.in_namespace(ns).len(),
            "daemonsets.apps" => c.daemonsets.in_namespace(ns).len(),
            "statefulsets.apps" => c.statefulsets.in_namespace(ns).len(),
            "controllerrevisions.apps" => c.controllerrevisions.in_namespace(ns).len(),
            "jobs.batch" => c.jobs.in_namespace(ns).len(),
            "cronjobs.batch" => c.cronjobs.in_namespace(ns).len(),
            "leases.coordination.k8s.io" => c.leases.in_namespace(ns).len(),
            "endpoints" => c.endpoints.in_namespace(ns).len(),
            "endpointslices.discovery.k8s.io" => c.endpointslices.in_namespace(ns).len(),
            "serviceaccounts" => c.serviceaccounts.in_namespace(ns).len(),
            "poddisruptionbudgets.policy" => c.pdbs.in_namespace(ns).len(),
            "resourcequotas" => c.resourcequotas.in_namespace(ns).len(),
            _ => 0,
        }
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let ns = key.namespace.as_str();
        let Some(quota) = self.caches.resourcequotas.get(ns, &key.name) else {
            return Ok(Next::Done);
        };
        let pods = if tracks(&quota, Evaluator::Pods) {
            self.caches.pods.in_namespace(ns)
        } else {
            Vec::new()
        };
        let services = if tracks(&quota, Evaluator::Services) {
            self.caches.services.in_namespace(ns)
        } else {
            Vec::new()
        };
        let pvcs = if tracks(&quota, Evaluator::Pvcs) {
            self.caches.pvcs.in_namespace(ns)
        } else {
            Vec::new()
        };
        let count = |resource: &str| self.count(ns, resource);
        let decision = reconcile(
            &quota,
            &Observed {
                pods: &pods,
                services: &services,
                pvcs: &pvcs,
                count: &count,
                now: self.clock.now(),
            },
        );
        let mut next = decision.requeue.map_or(Next::Done, Next::After);
        if let Some(status) = decision.status {
            let kind = Kind::of::<ResourceQuota>(true);
            let mut body = (*quota).clone();
            body.status = Some(status);
            let body = serde_json::to_value(&body)
                .map_err(|e| driver::Error::Encode("ResourceQuota".into(), e))?;
            match self
                .effects
                .replace_status(&kind, ns, &key.name, body)
                .await
            {
                Ok(_) => {}
                // A newer quota is on its way, or it is gone.
                Err(kube::Error::Api(s)) if s.code == 409 => next = next.min(Next::After(RETRY)),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(driver::api_error("update status of", &kind, ns, &key.name)(
                        e,
                    ))
                }
            }
        }
        Ok(next)
    }
}

impl Reconciler for ResourceQuotaController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "resourcequota"
    }

    fn sync<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{FixedClock, Recording};
    use futures::stream;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PodStatus, ResourceQuotaSpec, ResourceRequirements,
        ScopeSelector, ScopedResourceSelectorRequirement, ServicePort, ServiceSpec,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::runtime::watcher;
    use std::sync::Mutex;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn q(s: &str) -> String {
        Amount::parse(s).unwrap().to_string()
    }

    fn quantities(kv: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn quantities_are_written_in_canonical_form() {
        assert_eq!(q("100m"), "100m");
        assert_eq!(q("1000m"), "1");
        assert_eq!(q("1500m"), "1500m");
        assert_eq!(q("0.5"), "500m");
        assert_eq!(q("1000"), "1k");
        assert_eq!(q("128974848"), "128974848");
        assert_eq!(q("1Gi"), "1Gi");
        assert_eq!(q("1024Mi"), "1Gi");
        assert_eq!(q("1.5Gi"), "1536Mi");
        assert_eq!(q("1.5Ki"), "1536");
        assert_eq!(q("512Ki"), "512Ki");
        assert_eq!(q("0.5Ki"), "512");
        assert_eq!(q("2e3"), "2e3");
        assert_eq!(q("1E"), "1E");
        assert_eq!(q("0"), "0");
        assert_eq!(q("-250m"), "-250m");
        assert_eq!(q("0Mi"), "0");
        assert!(Amount::parse("abc").is_none());
        assert!(Amount::parse("1.2.3").is_none());
        assert!(Amount::parse("5Qi").is_none());
        // A sum keeps the format of its first non-zero term.
        let mut sum = Amount::ZERO;
        for s in ["64Mi", "64Mi", "64Mi"] {
            sum.add(Amount::parse(s).unwrap());
        }
        assert_eq!(sum.to_string(), "192Mi");
        let mut mixed = Amount::parse("100M").unwrap();
        mixed.add(Amount::parse("1Mi").unwrap());
        assert_eq!(mixed.to_string(), "101048576");
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: quantities(requests),
                limits: quantities(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
        }
    }

    fn shown(u: &Usage) -> BTreeMap<&str, String> {
        u.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect()
    }

    #[test]
    fn pod_usage_counts_containers_init_containers_sidecars_and_overhead() {
        let mut p = pod(
            "p",
            vec![
                container(&[("cpu", "100m"), ("memory", "64Mi")], &[("cpu", "200m")]),
                container(&[("cpu", "100m"), ("nvidia.com/gpu", "1")], &[]),
            ],
        );
        let spec = p.spec.as_mut().unwrap();
        let mut sidecar = container(&[("cpu", "50m")], &[]);
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers = Some(vec![
            sidecar,
            container(&[("cpu", "1"), ("memory", "32Mi")], &[]),
        ]);
        spec.overhead = quantities(&[("cpu", "10m"), ("memory", "1Mi")]);
        let u = pod_usage(&p, t(0));
        let s = shown(&u);
        // Containers and the sidecar: 250m; the init container with the sidecar:
        // 1050m, which wins; plus 10m overhead.
        assert_eq!(s["requests.cpu"], "1060m");
        assert_eq!(s["cpu"], "1060m");
        assert_eq!(s["requests.memory"], "65Mi");
        assert_eq!(s["memory"], "65Mi");
        assert_eq!(s["limits.cpu"], "210m");
        assert!(!s.contains_key("limits.memory"));
        assert_eq!(s["requests.nvidia.com/gpu"], "1");
        assert_eq!(s["pods"], "1");
        assert_eq!(s["count/pods"], "1");

        // Finished pods count only as objects.
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(
            shown(&pod_usage(&p, t(0))).keys().collect::<Vec<_>>(),
            [&"count/pods"]
        );
    }

    fn quota(hard: &[(&str, &str)]) -> ResourceQuota {
        ResourceQuota {
            metadata: ObjectMeta {
                name: Some("q".into()),
                namespace: Some("default".into()),
                resource_version: Some("3".into()),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: quantities(hard),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn service(ty: &str, ports: usize) -> Arc<Service> {
        Arc::new(Service {
            spec: Some(ServiceSpec {
                type_: Some(ty.into()),
                ports: Some(
                    (0..ports)
                        .map(|i| ServicePort {
                            port: 80 + i as i32,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn pvc(class: &str, storage: &str) -> Arc<PersistentVolumeClaim> {
        Arc::new(PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                resources: Some(VolumeResourceRequirements {
                    requests: quantities(&[("storage", storage)]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn used(d: &Decision) -> BTreeMap<String, String> {
        d.status
            .as_ref()
            .unwrap()
            .used
            .clone()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    fn observed<'a>(
        pods: &'a [Arc<Pod>],
        services: &'a [Arc<Service>],
        pvcs: &'a [Arc<PersistentVolumeClaim>],
        count: &'a dyn Fn(&str) -> usize,
        now: i64,
    ) -> Observed<'a> {
        Observed {
            pods,
            services,
            pvcs,
            count,
            now: t(now),
        }
    }

    #[test]
    fn status_copies_hard_and_measures_what_it_limits() {
        let hard = [
            ("pods", "10"),
            ("requests.cpu", "1"),
            ("requests.memory", "1Gi"),
            ("limits.memory", "2Gi"),
            ("services", "5"),
            ("services.nodeports", "4"),
            ("services.loadbalancers", "1"),
            ("persistentvolumeclaims", "3"),
            ("requests.storage", "10Gi"),
            ("fast.storageclass.storage.k8s.io/requests.storage", "5Gi"),
            ("count/deployments.apps", "2"),
            ("count/configmaps", "4"),
            ("secrets", "4"),
        ];
        let mut rq = quota(&hard);
        rq.status = Some(ResourceQuotaStatus {
            hard: None,
            used: quantities(&[("secrets", "2"), ("gone", "1")]),
        });
        let mut done = pod("done", vec![container(&[("cpu", "1")], &[])]);
        done.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(pod(
                "a",
                vec![container(&[("cpu", "100m"), ("memory", "64Mi")], &[])],
            )),
            Arc::new(pod(
                "b",
                vec![container(&[("cpu", "100m"), ("memory", "64Mi")], &[])],
            )),
            Arc::new(pod("c", vec![container(&[("cpu", "100m")], &[])])),
            Arc::new(done),
        ];
        let services = [
            service("ClusterIP", 1),
            service("NodePort", 2),
            service("LoadBalancer", 1),
        ];
        let pvcs = [pvc("fast", "1Gi"), pvc("slow", "512Mi")];
        let count = |r: &str| usize::from(r == "deployments.apps");
        let d = reconcile(&rq, &observed(&pods, &services, &pvcs, &count, 0));
        let status = d.status.as_ref().unwrap();
        assert_eq!(status.hard, quantities(&hard));
        let want: BTreeMap<String, String> = [
            ("pods", "3"),
            ("requests.cpu", "300m"),
            ("requests.memory", "128Mi"),
            ("limits.memory", "0"),
            ("services", "3"),
            ("services.nodeports", "3"),
            ("services.loadbalancers", "1"),
            ("persistentvolumeclaims", "2"),
            ("requests.storage", "1536Mi"),
            ("fast.storageclass.storage.k8s.io/requests.storage", "1Gi"),
            ("count/deployments.apps", "1"),
            // Not measured here: kept as the status had it (or absent).
            ("secrets", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(used(&d), want);
        assert_eq!(d.requeue, None);

        // Written once: the same again decides nothing.
        rq.status = d.status.clone();
        let again = reconcile(&rq, &observed(&pods, &services, &pvcs, &count, 0));
        assert_eq!(again.status, None);
    }

    #[test]
    fn scopes_pick_pods_and_nothing_else() {
        let mut rq = quota(&[("pods", "5"), ("requests.cpu", "2"), ("services", "1")]);
        rq.spec.as_mut().unwrap().scopes = Some(vec!["NotBestEffort".into()]);
        let best_effort = Arc::new(pod("be", vec![container(&[], &[])]));
        let mut high = pod("high", vec![container(&[("cpu", "500m")], &[])]);
        high.spec.as_mut().unwrap().priority_class_name = Some("high".into());
        let mut deadline = pod("job", vec![container(&[("cpu", "250m")], &[])]);
        deadline.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
        let pods = vec![best_effort, Arc::new(high), Arc::new(deadline)];
        let services = [service("ClusterIP", 1)];
        let count = |_: &str| 0;
        let d = reconcile(&rq, &observed(&pods, &services, &[], &count, 0));
        let u = used(&d);
        assert_eq!(
            (
                u["pods"].as_str(),
                u["requests.cpu"].as_str(),
                u["services"].as_str()
            ),
            ("2", "750m", "0")
        );

        rq.spec.as_mut().unwrap().scopes = Some(vec!["Terminating".into()]);
        let u = used(&reconcile(&rq, &observed(&pods, &services, &[], &count, 0)));
        assert_eq!(u["requests.cpu"], "250m");

        rq.spec.as_mut().unwrap().scopes = None;
        rq.spec.as_mut().unwrap().scope_selector = Some(ScopeSelector {
            match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                scope_name: "PriorityClass".into(),
                operator: "In".into(),
                values: Some(vec!["high".into()]),
            }]),
        });
        let u = used(&reconcile(&rq, &observed(&pods, &services, &[], &count, 0)));
        assert_eq!(
            (u["pods"].as_str(), u["requests.cpu"].as_str()),
            ("1", "500m")
        );
    }

    #[test]
    fn a_deleted_pod_stops_counting_after_its_grace_period() {
        let rq = quota(&[("pods", "5")]);
        let mut p = pod("p", vec![]);
        p.metadata.deletion_timestamp = Some(Time(t(30)));
        p.metadata.deletion_grace_period_seconds = Some(30);
        let pods = [Arc::new(p)];
        let count = |_: &str| 0;
        let d = reconcile(&rq, &observed(&pods, &[], &[], &count, 0));
        assert_eq!(used(&d)["pods"], "1");
        assert_eq!(d.requeue, Some(Duration::from_secs(61)));
        let d = reconcile(&rq, &observed(&pods, &[], &[], &count, 61));
        assert_eq!(used(&d)["pods"], "0");
        assert_eq!(d.requeue, None);
    }

    #[test]
    fn resource_names_map_to_their_measures() {
        assert_eq!(evaluator("requests.hugepages-2Mi"), Some(Evaluator::Pods));
        assert_eq!(evaluator("requests.example.com/foo"), Some(Evaluator::Pods));
        assert_eq!(evaluator("requests.storage"), Some(Evaluator::Pvcs));
        assert_eq!(
            evaluator("gold.storageclass.storage.k8s.io/persistentvolumeclaims"),
            Some(Evaluator::Pvcs)
        );
        assert_eq!(
            evaluator("count/jobs.batch"),
            Some(Evaluator::Count("jobs.batch"))
        );
        assert_eq!(evaluator("count/configmaps"), None);
        assert_eq!(evaluator("configmaps"), None);
        assert_eq!(evaluator("count/widgets.example.com"), None);
    }

    #[tokio::test]
    async fn driver_writes_the_status_when_pods_change() {
        let fx = Arc::new(Recording::default());
        let caches = Arc::new(Caches::new());
        let queue = Queue::new();
        ResourceQuotaController::watch(&caches, &queue);
        let clock = Arc::new(FixedClock(Mutex::new(t(0))));
        let c = ResourceQuotaController::new(caches.clone(), fx.clone(), clock);
        let events = |objs: Vec<ResourceQuota>| {
            let mut e = vec![Ok(watcher::Event::Init)];
            e.extend(objs.into_iter().map(|o| Ok(watcher::Event::InitApply(o))));
            e.push(Ok(watcher::Event::InitDone));
            e
        };
        caches
            .resourcequotas
            .feed(stream::iter(events(vec![quota(&[("pods", "2")])])))
            .await;
        let key = queue.next().await;
        queue.done(&key, Ok(Next::Done));
        // A pod in the namespace brings the quota back.
        let p = pod("a", vec![container(&[("cpu", "100m")], &[])]);
        caches
            .pods
            .feed(stream::iter(vec![
                Ok(watcher::Event::Init),
                Ok(watcher::Event::InitDone),
                Ok(watcher::Event::Apply(p)),
            ]))
            .await;
        let key = queue.next().await;
        assert_eq!(key.name, "q");
        assert_eq!(c.sync(&key).await.unwrap(), Next::Done);
        let calls = fx.calls();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        assert!(
            calls[0].starts_with("status ResourceQuota default/q")
                && calls[0].contains(r#""used":{"pods":"1"}"#),
            "{calls:#?}"
        );
    }
}
