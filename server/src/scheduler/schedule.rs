//! One scheduling decision: filter the nodes, score the ones that fit, pick the best. A
//! pure function of the cache and the pod (plus a rotating start and a random tie-break).
//! The same filters answer preemption's question ([`DryRun`]): would the pod fit this node
//! if some of its pods were gone?

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::cache::{Cache, NodeFacts, NodeInfo, PodFacts, ZONE};
use super::filter::{self, Domains, Reason, SpreadCheck};
use super::resources::Resources;
use super::score::{self, weight};
use super::Strategy;

/// Where to start looking and the random state for ties; kept between decisions.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// Index of the node slot to start at (rotates so every node gets its turn).
    pub start: usize,
    /// xorshift state (never 0).
    pub rng: u64,
}

impl Cursor {
    /// A cursor with the given seed.
    pub fn new(seed: u64) -> Cursor {
        Cursor {
            start: 0,
            rng: seed | 1,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A random number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }
}

/// How many feasible nodes to find before scoring (upstream's adaptive
/// percentageOfNodesToScore: all below 100 nodes, then 50% shrinking to 5%, at least 100).
pub fn nodes_to_find(all: usize) -> usize {
    if all < 100 {
        return all;
    }
    let pct = (50 - (all / 125) as i64).max(5) as usize;
    (all * pct / 100).max(100)
}

/// Why the pod fits nowhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Unschedulable {
    /// Upstream's FitError message, before what preemption adds to it.
    pub message: String,
    /// Each node that was tried (its slot in [`Cache::slots`]) with why it failed; empty
    /// when there are no nodes.
    pub failures: Vec<(usize, Vec<Reason>)>,
}

/// Some pods of one node, to count as gone (a preemption dry run).
#[derive(Debug, Clone, Copy)]
pub struct Removed<'a> {
    /// The node they are on.
    pub node: &'a str,
    /// Their keys.
    pub keys: &'a HashSet<String>,
}

fn gone(removed: Option<Removed>, node: &str, key: &str) -> bool {
    removed.is_some_and(|r| r.node == node && r.keys.contains(key))
}

/// The parts of the pod spec the filters and scores read, gathered once.
struct Wants<'a> {
    facts: &'a PodFacts,
    tolerations: &'a [k8s_openapi::api::core::v1::Toleration],
    node_name: Option<&'a str>,
    node_selector: Option<&'a BTreeMap<String, String>>,
    required: Option<&'a k8s_openapi::api::core::v1::NodeSelector>,
    preferred: &'a [k8s_openapi::api::core::v1::PreferredSchedulingTerm],
    affinity: &'a [PodAffinityTerm],
    spread: &'a [TopologySpreadConstraint],
}

impl<'a> Wants<'a> {
    fn of(pod: &'a Pod, facts: &'a PodFacts) -> Wants<'a> {
        let spec = pod.spec.as_ref();
        let na = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        Wants {
            facts,
            tolerations: spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]),
            node_name: spec.and_then(|s| s.node_name.as_deref()),
            node_selector: spec.and_then(|s| s.node_selector.as_ref()),
            required: na.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            preferred: na
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_deref()
                })
                .unwrap_or(&[]),
            affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_deref()
                })
                .unwrap_or(&[]),
            spread: spec
                .and_then(|s| s.topology_spread_constraints.as_deref())
                .unwrap_or(&[]),
        }
    }

    fn matches_affinity(&self, node: &NodeFacts) -> bool {
        filter::node_affinity(node, self.node_selector, self.required).is_ok()
    }
}

/// The selector of a spread constraint, with matchLabelKeys folded in.
fn spread_selector(
    c: &TopologySpreadConstraint,
    labels: &BTreeMap<String, String>,
) -> Option<LabelSelector> {
    let mut sel = c.label_selector.clone()?;
    for key in c.match_label_keys.iter().flatten() {
        if let Some(v) = labels.get(key) {
            sel.match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(key.clone(), v.clone());
        }
    }
    Some(sel)
}

/// Matching pods per domain of `c.topology_key`, over nodes that have every key in
/// `keys` and (policy permitting) match the pod's node affinity.
fn count_domains(
    cache: &Cache,
    want: &Wants,
    c: &TopologySpreadConstraint,
    keys: &[&str],
    removed: Option<Removed>,
) -> HashMap<String, i64> {
    let sel = spread_selector(c, &want.facts.labels);
    let honor_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
    let honor_taints = c.node_taints_policy.as_deref() == Some("Honor");
    let mut counts: HashMap<String, i64> = HashMap::new();
    for info in cache.slots() {
        let Some(node) = &info.facts else { continue };
        if !keys.iter().all(|k| node.labels.contains_key(*k)) {
            continue;
        }
        if honor_affinity && !want.matches_affinity(node) {
            continue;
        }
        if honor_taints && filter::taints(&node.taints, want.tolerations).is_err() {
            continue;
        }
        let Some(domain) = node.labels.get(&c.topology_key) else {
            continue;
        };
        let n = info
            .pods
            .values()
            .filter(|p| {
                !p.terminating
                    && !gone(removed, &info.name, &p.key)
                    && p.namespace == want.facts.namespace
                    && filter::selector_matches(sel.as_ref(), &p.labels)
            })
            .count() as i64;
        *counts.entry(domain.clone()).or_default() += n;
    }
    counts
}

fn spread_checks(cache: &Cache, want: &Wants, removed: Option<Removed>) -> Vec<SpreadCheck> {
    let hard: Vec<&TopologySpreadConstraint> = want
        .spread
        .iter()
        .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
        .collect();
    let keys: Vec<&str> = hard.iter().map(|c| c.topology_key.as_str()).collect();
    hard.iter()
        .map(|c| {
            let counts = count_domains(cache, want, c, &keys, removed);
            let min_domains = c.min_domains.unwrap_or(1).max(1) as usize;
            let min = if counts.len() < min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let self_match = spread_selector(c, &want.facts.labels)
                .is_some_and(|s| filter::selector_matches(Some(&s), &want.facts.labels));
            SpreadCheck {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew),
                counts,
                min,
                self_match: i64::from(self_match),
            }
        })
        .collect()
}

/// Domains holding pods that `terms` (of a pod in `ns`) select.
fn selected_domains(
    cache: &Cache,
    terms: &[PodAffinityTerm],
    ns: &str,
    removed: Option<Removed>,
) -> Vec<(String, HashSet<String>)> {
    terms
        .iter()
        .map(|t| {
            let mut values = HashSet::new();
            for info in cache.slots() {
                let Some(v) = info
                    .facts
                    .as_ref()
                    .and_then(|f| f.labels.get(&t.topology_key))
                else {
                    continue;
                };
                if values.contains(v) {
                    continue;
                }
                if info
                    .pods
                    .values()
                    .any(|p| !gone(removed, &info.name, &p.key) && filter::term_selects(t, ns, p))
                {
                    values.insert(v.clone());
                }
            }
            (t.topology_key.clone(), values)
        })
        .collect()
}

fn merge(into: &mut Domains, from: Vec<(String, HashSet<String>)>) {
    for (k, values) in from {
        into.entry(k).or_default().extend(values);
    }
}

/// Scoring inputs computed once per decision.
struct Spreading {
    /// ScheduleAnyway constraints: (key, maxSkew, weight, counts).
    soft: Vec<(String, i64, f64, HashMap<String, i64>)>,
    /// The owner whose replicas to spread, with per-zone counts when there are zones.
    owner: Option<(String, HashMap<String, i64>)>,
    host_weight: f64,
    zone_weight: f64,
}

fn spreading(cache: &Cache, want: &Wants) -> Spreading {
    let soft_constraints: Vec<&TopologySpreadConstraint> = want
        .spread
        .iter()
        .filter(|c| c.when_unsatisfiable == "ScheduleAnyway")
        .collect();
    let keys: Vec<&str> = soft_constraints
        .iter()
        .map(|c| c.topology_key.as_str())
        .collect();
    let soft = soft_constraints
        .iter()
        .map(|c| {
            let counts = count_domains(cache, want, c, &keys, None);
            let w = ((counts.len() + 2) as f64).ln();
            (c.topology_key.clone(), i64::from(c.max_skew), w, counts)
        })
        .collect();
    // Without constraints of its own, a pod's replicas spread by owner over hosts and
    // zones, as upstream's system-default constraints do (maxSkew 3 and 5).
    let owner = match (&want.facts.owner, want.spread.is_empty()) {
        (Some(owner), true) => {
            let mut zones = HashMap::new();
            if cache.zone_count() > 0 {
                for info in cache.slots() {
                    let Some(zone) = info.facts.as_ref().and_then(|f| f.labels.get(ZONE)) else {
                        continue;
                    };
                    let n = info.owners.get(owner).copied().unwrap_or(0);
                    *zones.entry(zone.clone()).or_default() += i64::from(n);
                }
            }
            Some((owner.clone(), zones))
        }
        _ => None,
    };
    Spreading {
        soft,
        owner,
        host_weight: ((cache.node_count() + 2) as f64).ln(),
        zone_weight: ((cache.zone_count() + 2) as f64).ln(),
    }
}

impl Spreading {
    fn raw(&self, info: &NodeInfo, node: &NodeFacts) -> f64 {
        let mut terms: Vec<(i64, i64, f64)> = Vec::with_capacity(2);
        for (key, max_skew, w, counts) in &self.soft {
            if let Some(v) = node.labels.get(key) {
                terms.push((counts.get(v).copied().unwrap_or(0), *max_skew, *w));
            }
        }
        if let Some((owner, zones)) = &self.owner {
            let here = info.owners.get(owner).copied().unwrap_or(0);
            terms.push((i64::from(here), 3, self.host_weight));
            if let Some(z) = node.labels.get(ZONE) {
                terms.push((zones.get(z).copied().unwrap_or(0), 5, self.zone_weight));
            }
        }
        score::spread_raw(&terms)
    }
}

/// What the filters need of the whole cluster, computed once per decision (upstream's
/// PreFilter state).
struct PreFilter {
    spread: Vec<SpreadCheck>,
    anti_own: Domains,
    anti_existing: Domains,
    affinity: Option<Vec<(String, HashSet<String>)>>,
}

impl PreFilter {
    fn of(cache: &Cache, want: &Wants, removed: Option<Removed>) -> PreFilter {
        let facts = want.facts;
        let spread = if want.spread.is_empty() {
            Vec::new()
        } else {
            spread_checks(cache, want, removed)
        };
        let mut anti_own = Domains::new();
        if !facts.anti_affinity.is_empty() {
            merge(
                &mut anti_own,
                selected_domains(cache, &facts.anti_affinity, &facts.namespace, removed),
            );
        }
        let mut anti_existing = Domains::new();
        for (info, other) in cache.anti_affinity_pods() {
            let Some(node) = &info.facts else { continue };
            if gone(removed, &info.name, &other.key) {
                continue;
            }
            for t in &other.anti_affinity {
                if filter::term_selects(t, &other.namespace, facts) {
                    if let Some(v) = node.labels.get(&t.topology_key) {
                        anti_existing
                            .entry(t.topology_key.clone())
                            .or_default()
                            .insert(v.clone());
                    }
                }
            }
        }
        let affinity = if want.affinity.is_empty() {
            None
        } else {
            let domains = selected_domains(cache, want.affinity, &facts.namespace, removed);
            let nobody = domains.iter().all(|(_, v)| v.is_empty());
            let selects_itself = want
                .affinity
                .iter()
                .all(|t| filter::term_selects(t, &facts.namespace, facts));
            if nobody && selects_itself {
                None
            } else {
                Some(domains)
            }
        };
        PreFilter {
            spread,
            anti_own,
            anti_existing,
            affinity,
        }
    }

    /// Whether taking pods away can change this state (the pod has inter-pod rules, or
    /// existing pods' rules reach it).
    fn depends_on_pods(&self, want: &Wants) -> bool {
        !want.spread.is_empty()
            || !want.facts.anti_affinity.is_empty()
            || !want.affinity.is_empty()
            || !self.anti_existing.is_empty()
    }
}

/// What the node's pods request, less `removed`, plus the pods nominated to the node that
/// are at least as important as the pod (upstream's filtering "with nominated pods": room
/// freed by a preemption is kept for the preemptor).
fn requested_on<'a>(
    cache: &Cache,
    info: &'a NodeInfo,
    pod: &PodFacts,
    removed: Option<Removed>,
) -> Cow<'a, Resources> {
    let mut requested = Cow::Borrowed(&info.requested);
    if let Some(r) = removed.filter(|r| r.node == info.name) {
        for key in r.keys {
            if let Some(p) = info.pods.get(key) {
                requested.to_mut().sub(&p.requests);
            }
        }
    }
    for p in cache.nominated_on(&info.name) {
        if p.key != pod.key && p.priority >= pod.priority {
            requested.to_mut().add(&p.requests);
        }
    }
    requested
}

/// Runs the filters in upstream's order; the first that fails decides.
fn filter_node(
    cache: &Cache,
    info: &NodeInfo,
    node: &NodeFacts,
    want: &Wants,
    pre: &PreFilter,
    removed: Option<Removed>,
) -> Result<(), Vec<Reason>> {
    let one = |r: Result<(), Reason>| r.map_err(|e| vec![e]);
    one(filter::node_unschedulable(node, want.tolerations))?;
    one(filter::node_name(want.node_name, &node.name))?;
    one(filter::taints(&node.taints, want.tolerations))?;
    one(filter::node_affinity(
        node,
        want.node_selector,
        want.required,
    ))?;
    match removed.filter(|r| r.node == info.name && !r.keys.is_empty()) {
        Some(r) if !want.facts.host_ports.is_empty() => {
            let clash = info
                .pods
                .values()
                .filter(|p| !r.keys.contains(&p.key))
                .flat_map(|p| p.host_ports.iter())
                .any(|used| want.facts.host_ports.iter().any(|w| w.clashes(used)));
            if clash {
                return Err(vec![Reason::HostPorts]);
            }
        }
        _ => one(filter::host_ports(&want.facts.host_ports, info))?,
    }
    let requested = requested_on(cache, info, want.facts, removed);
    filter::resources(&want.facts.requests, &node.allocatable, &requested)?;
    if !pre.spread.is_empty() {
        one(filter::spread(&node.labels, &pre.spread))?;
    }
    one(filter::pod_affinity(&node.labels, pre.affinity.as_deref()))?;
    if !pre.anti_own.is_empty() || !pre.anti_existing.is_empty() {
        one(filter::anti_affinity(
            &node.labels,
            &pre.anti_own,
            &pre.anti_existing,
        ))?;
    }
    Ok(())
}

/// Whether a pod fits a node once some of the node's pods are gone: the filters of a
/// preemption dry run, with the cluster-wide state recomputed only when pods matter to it.
pub struct DryRun<'a> {
    cache: &'a Cache,
    want: Wants<'a>,
    pre: PreFilter,
    depends_on_pods: bool,
}

impl<'a> DryRun<'a> {
    /// Prepares the dry runs of `pod`.
    pub fn new(cache: &'a Cache, pod: &'a Pod, facts: &'a PodFacts) -> DryRun<'a> {
        let want = Wants::of(pod, facts);
        let pre = PreFilter::of(cache, &want, None);
        let depends_on_pods = pre.depends_on_pods(&want);
        DryRun {
            cache,
            want,
            pre,
            depends_on_pods,
        }
    }

    /// Whether the pod fits `info` with the pods `removed` (keys) gone.
    pub fn fits(&self, info: &NodeInfo, removed: &HashSet<String>) -> Result<(), Vec<Reason>> {
        let Some(node) = &info.facts else {
            return Err(Vec::new());
        };
        let r = Removed {
            node: &info.name,
            keys: removed,
        };
        if self.depends_on_pods && !removed.is_empty() {
            let pre = PreFilter::of(self.cache, &self.want, Some(r));
            filter_node(self.cache, info, node, &self.want, &pre, Some(r))
        } else {
            filter_node(self.cache, info, node, &self.want, &self.pre, Some(r))
        }
    }
}

/// The node a pod was nominated to (after preempting there): its status says so, or this
/// scheduler has just decided it.
pub fn nominated_node<'a>(cache: &'a Cache, pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
        .or_else(|| cache.nominated_node(key))
}

/// Picks a node for `pod`, or says why none fits.
pub fn schedule(
    cache: &Cache,
    pod: &Pod,
    facts: &PodFacts,
    strategy: Strategy,
    cursor: &mut Cursor,
) -> Result<String, Unschedulable> {
    let all = cache.node_count();
    let slots = cache.slots();
    if all == 0 || slots.is_empty() {
        return Err(Unschedulable {
            message: filter::NO_NODES.to_owned(),
            failures: Vec::new(),
        });
    }
    let want = Wants::of(pod, facts);
    let pre = PreFilter::of(cache, &want, None);

    // A pod that preempted goes to the node it was nominated to once it fits there.
    if let Some(name) = nominated_node(cache, pod, &facts.key) {
        if let Some(info) = cache.node(name) {
            if let Some(node) = &info.facts {
                if filter_node(cache, info, node, &want, &pre, None).is_ok() {
                    return Ok(info.name.clone());
                }
            }
        }
    }

    // Filter, from a rotating start, until enough nodes fit.
    let to_find = nodes_to_find(all);
    let mut feasible: Vec<usize> = Vec::with_capacity(to_find.min(1024));
    let mut failures: Vec<(usize, Vec<Reason>)> = Vec::new();
    let n = slots.len();
    let start = cursor.start % n;
    let mut visited = 0;
    for step in 0..n {
        let i = (start + step) % n;
        visited = step + 1;
        let info = &slots[i];
        let Some(node) = &info.facts else { continue };
        match filter_node(cache, info, node, &want, &pre, None) {
            Ok(()) => {
                feasible.push(i);
                if feasible.len() >= to_find {
                    break;
                }
            }
            Err(why) => failures.push((i, why)),
        }
    }
    cursor.start = (start + visited) % n;
    if feasible.is_empty() {
        let reasons = failures
            .iter()
            .flat_map(|(_, why)| why.iter().map(ToString::to_string));
        return Err(Unschedulable {
            message: filter::fit_error(all, reasons),
            failures,
        });
    }
    if feasible.len() == 1 {
        return Ok(slots[feasible[0]].name.clone());
    }

    // Score.
    let spreading = spreading(cache, &want);
    let spreads = spreading.owner.is_some() || !spreading.soft.is_empty();
    let mut fit = Vec::with_capacity(feasible.len());
    let mut taints = Vec::with_capacity(feasible.len());
    let mut preferred = Vec::with_capacity(feasible.len());
    let mut spread_raw = Vec::with_capacity(feasible.len());
    for &i in &feasible {
        let info = &slots[i];
        let Some(node) = &info.facts else { continue };
        let requested = (
            info.non_zero.0 + facts.non_zero.0,
            info.non_zero.1 + facts.non_zero.1,
        );
        let alloc = (node.allocatable.milli_cpu, node.allocatable.memory);
        let resource = match strategy {
            Strategy::LeastAllocated => score::least_allocated(requested, alloc),
            Strategy::BinPack => score::most_allocated(requested, alloc),
        };
        fit.push(resource * weight::FIT + score::balanced(requested, alloc) * weight::BALANCED);
        taints.push(filter::intolerable_prefer_no_schedule(
            &node.taints,
            want.tolerations,
        ));
        preferred.push(if want.preferred.is_empty() {
            0
        } else {
            score::preferred_node_affinity(want.preferred, node)
        });
        if spreads {
            spread_raw.push(spreading.raw(info, node));
        }
    }
    score::normalize(&mut taints, true);
    score::normalize(&mut preferred, false);
    let spread_scores = if spreads {
        score::normalize_spread(&spread_raw)
    } else {
        vec![0; feasible.len()]
    };
    let mut best: Option<(usize, i64)> = None;
    let mut ties = 0u64;
    for (k, &i) in feasible.iter().enumerate() {
        let total = fit[k]
            + taints[k] * weight::TAINTS
            + preferred[k] * weight::NODE_AFFINITY
            + spread_scores[k] * weight::SPREAD;
        match best {
            Some((_, b)) if total < b => {}
            Some((_, b)) if total == b => {
                ties += 1;
                if cursor.next().is_multiple_of(ties + 1) {
                    best = Some((i, total));
                }
            }
            _ => {
                best = Some((i, total));
                ties = 0;
            }
        }
    }
    Ok(best.map(|(i, _)| slots[i].name.clone()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::tests::{bound, node, pod};
    use crate::scheduler::cache::HOSTNAME;
    use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity, Taint, TopologySpreadConstraint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::sync::Arc;

    fn decide(cache: &Cache, p: &Pod, strategy: Strategy) -> Result<String, Unschedulable> {
        schedule(
            cache,
            p,
            &PodFacts::from_pod(p),
            strategy,
            &mut Cursor::new(7),
        )
    }

    fn owned(mut p: Pod, owner: &str) -> Pod {
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: owner.into(),
            uid: owner.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        p
    }

    #[test]
    fn sampling_follows_upstream() {
        assert_eq!(nodes_to_find(50), 50);
        assert_eq!(nodes_to_find(100), 100);
        assert_eq!(nodes_to_find(1000), 420);
        assert_eq!(nodes_to_find(5000), 500);
        assert_eq!(nodes_to_find(200), 100);
    }

    #[test]
    fn least_allocated_spreads_and_bin_pack_packs() {
        let mut c = Cache::default();
        c.apply_node(&node("a", "4", "8Gi"));
        c.apply_node(&node("b", "4", "8Gi"));
        c.apply_pod(&bound(pod("x", "2", "4Gi"), "a"));
        let p = pod("p", "500m", "512Mi");
        assert_eq!(decide(&c, &p, Strategy::LeastAllocated).unwrap(), "b");
        assert_eq!(decide(&c, &p, Strategy::BinPack).unwrap(), "a");
    }

    #[test]
    fn a_burst_does_not_overcommit() {
        let mut c = Cache::default();
        c.apply_node(&node("a", "2", "8Gi"));
        let mut placed = 0;
        for i in 0..5 {
            let p = pod(&format!("p{i}"), "500m", "");
            let facts = PodFacts::from_pod(&p);
            match schedule(
                &c,
                &p,
                &facts,
                Strategy::LeastAllocated,
                &mut Cursor::new(1),
            ) {
                Ok(n) => {
                    c.assume(Arc::new(facts), &n);
                    placed += 1;
                }
                Err(e) => assert_eq!(e.message, "0/1 nodes are available: 1 Insufficient cpu."),
            }
        }
        assert_eq!(placed, 4);
    }

    #[test]
    fn replicas_of_one_owner_spread() {
        let mut c = Cache::default();
        for n in ["a", "b", "c"] {
            c.apply_node(&node(n, "8", "16Gi"));
        }
        // Node a is emptier but already holds a replica.
        c.apply_pod(&bound(owned(pod("r0", "10m", ""), "rs"), "a"));
        c.apply_pod(&bound(pod("big-b", "1", "1Gi"), "b"));
        c.apply_pod(&bound(pod("big-c", "1", "1Gi"), "c"));
        let p = owned(pod("r1", "10m", ""), "rs");
        let chosen = decide(&c, &p, Strategy::LeastAllocated).unwrap();
        assert_ne!(chosen, "a");
    }

    #[test]
    fn failure_message_over_mixed_nodes() {
        let mut c = Cache::default();
        let mut cp = node("cp", "8", "8Gi");
        cp.spec.as_mut().unwrap().taints = Some(vec![Taint {
            key: "node-role.kubernetes.io/control-plane".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        c.apply_node(&cp);
        c.apply_node(&node("w1", "1", "8Gi"));
        let mut cordoned = node("w2", "8", "8Gi");
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        c.apply_node(&cordoned);
        let err = decide(&c, &pod("p", "2", ""), Strategy::LeastAllocated).unwrap_err();
        assert_eq!(
            err.message,
            "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 1 node(s) were unschedulable."
        );
        assert_eq!(err.failures.len(), 3);
        assert_eq!(
            decide(
                &Cache::default(),
                &pod("p", "", ""),
                Strategy::LeastAllocated
            )
            .unwrap_err()
            .message,
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn required_anti_affinity_by_hostname() {
        let mut c = Cache::default();
        c.apply_node(&node("a", "8", "8Gi"));
        c.apply_node(&node("b", "8", "8Gi"));
        let anti = |name: &str| {
            let mut p = pod(name, "10m", "");
            p.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "db".to_owned())]));
            p.spec.as_mut().unwrap().affinity = Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![
                        PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(BTreeMap::from([(
                                    "app".to_owned(),
                                    "db".to_owned(),
                                )])),
                                match_expressions: None,
                            }),
                            topology_key: HOSTNAME.into(),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            });
            p
        };
        c.apply_pod(&bound(anti("db-0"), "a"));
        assert_eq!(decide(&c, &anti("db-1"), Strategy::BinPack).unwrap(), "b");
        c.apply_pod(&bound(anti("db-1"), "b"));
        // Its own terms are checked first (upstream's order).
        let err = decide(&c, &anti("db-2"), Strategy::BinPack).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
        );
        // A pod without anti-affinity of its own is kept away by existing pods' rules
        // only if it matches them.
        let mut plain = pod("web", "10m", "");
        plain.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "web".to_owned())]));
        assert!(decide(&c, &plain, Strategy::BinPack).is_ok());
        let mut db = pod("db-x", "10m", "");
        db.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "db".to_owned())]));
        assert_eq!(
            decide(&c, &db, Strategy::BinPack).unwrap_err().message,
            "0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules."
        );
    }

    #[test]
    fn topology_spread_do_not_schedule() {
        let mut c = Cache::default();
        for (n, zone) in [("a", "z1"), ("b", "z1"), ("c", "z2")] {
            let mut nd = node(n, "8", "8Gi");
            nd.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert(ZONE.into(), zone.into());
            c.apply_node(&nd);
        }
        let spread = |name: &str| {
            let mut p = pod(name, "10m", "");
            p.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "web".to_owned())]));
            p.spec.as_mut().unwrap().topology_spread_constraints =
                Some(vec![TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: ZONE.into(),
                    when_unsatisfiable: "DoNotSchedule".into(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                        match_expressions: None,
                    }),
                    ..Default::default()
                }]);
            p
        };
        c.apply_pod(&bound(spread("w0"), "a"));
        // z1 has one, z2 none: the next must go to z2 (node c).
        assert_eq!(decide(&c, &spread("w1"), Strategy::BinPack).unwrap(), "c");
        c.apply_pod(&bound(spread("w1"), "c"));
        c.apply_pod(&bound(spread("w2"), "b"));
        // z1 two, z2 one: z1 is out.
        for _ in 0..5 {
            assert_eq!(decide(&c, &spread("w3"), Strategy::BinPack).unwrap(), "c");
        }
    }

    #[test]
    fn not_ready_nodes_are_skipped() {
        let mut c = Cache::default();
        let mut n = node("a", "8", "8Gi");
        n.status.as_mut().unwrap().conditions = None;
        c.apply_node(&n);
        let err = decide(&c, &pod("p", "", ""), Strategy::LeastAllocated).unwrap_err();
        assert!(err
            .message
            .starts_with("0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."));
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::scheduler::cache::tests::{node, pod};
    use std::sync::Arc;

    /// Decisions per second with 1,000 nodes, each decision assumed as the loop does.
    /// `cargo test -p skiff-server --release --lib decisions_per_second -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn decisions_per_second() {
        let mut c = Cache::default();
        for i in 0..1000 {
            c.apply_node(&node(&format!("node-{i}"), "32", "128Gi"));
        }
        let mut cursor = Cursor::new(3);
        let n = 20_000;
        let pods: Vec<Pod> = (0..n)
            .map(|i| {
                let mut p = pod(&format!("p{i}"), "10m", "16Mi");
                p.metadata.owner_references = Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        uid: "rs".into(),
                        controller: Some(true),
                        ..Default::default()
                    },
                ]);
                p
            })
            .collect();
        let t = std::time::Instant::now();
        for p in &pods {
            let facts = PodFacts::from_pod(p);
            let node = schedule(&c, p, &facts, Strategy::LeastAllocated, &mut cursor).unwrap();
            c.assume(Arc::new(facts), &node);
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!("{n} decisions in {secs:.2}s: {:.0}/s", n as f64 / secs);
    }
}
