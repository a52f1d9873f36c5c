//! Scores: how good is this node for this pod, 0..=100 per plugin, as upstream's plugins
//! compute them. Pure functions over plain values.

use k8s_openapi::api::core::v1::PreferredSchedulingTerm;

use super::cache::NodeFacts;
use super::filter::term_matches;

/// The best score a plugin gives.
pub const MAX: i64 = 100;

/// Weights of upstream's default profile.
pub mod weight {
    /// NodeResourcesFit (least- or most-allocated).
    pub const FIT: i64 = 1;
    /// NodeResourcesBalancedAllocation.
    pub const BALANCED: i64 = 1;
    /// PodTopologySpread (explicit constraints, or spreading an owner's replicas).
    pub const SPREAD: i64 = 2;
    /// NodeAffinity (preferred terms).
    pub const NODE_AFFINITY: i64 = 2;
    /// TaintToleration (PreferNoSchedule taints).
    pub const TAINTS: i64 = 3;
}

/// Room left after placing the pod, averaged over CPU and memory (`requested` includes
/// the pod). Prefers empty nodes.
pub fn least_allocated(requested: (i64, i64), allocatable: (i64, i64)) -> i64 {
    let one = |req: i64, alloc: i64| {
        if alloc <= 0 || req > alloc {
            0
        } else {
            (alloc - req) * MAX / alloc
        }
    };
    (one(requested.0, allocatable.0) + one(requested.1, allocatable.1)) / 2
}

/// Share used after placing the pod, averaged over CPU and memory. Prefers full nodes.
pub fn most_allocated(requested: (i64, i64), allocatable: (i64, i64)) -> i64 {
    let one = |req: i64, alloc: i64| {
        if alloc <= 0 {
            0
        } else {
            req.min(alloc).max(0) * MAX / alloc
        }
    };
    (one(requested.0, allocatable.0) + one(requested.1, allocatable.1)) / 2
}

/// How evenly CPU and memory would be used: 100 when both fractions are equal.
pub fn balanced(requested: (i64, i64), allocatable: (i64, i64)) -> i64 {
    let frac = |req: i64, alloc: i64| {
        if alloc <= 0 {
            1.0
        } else {
            (req as f64 / alloc as f64).min(1.0)
        }
    };
    let std = (frac(requested.0, allocatable.0) - frac(requested.1, allocatable.1)).abs() / 2.0;
    ((1.0 - std) * MAX as f64) as i64
}

/// Sum of the weights of the preferred node affinity terms the node matches.
pub fn preferred_node_affinity(terms: &[PreferredSchedulingTerm], node: &NodeFacts) -> i64 {
    terms
        .iter()
        .filter(|t| term_matches(&t.preference, &node.name, &node.labels))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Scales raw values so the largest becomes 100 (`reverse`: the largest becomes 0 and
/// zero becomes 100). All zero: 0, or 100 when reversed.
pub fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    for s in raw.iter_mut() {
        let scaled = if max == 0 { 0 } else { *s * MAX / max };
        *s = if reverse { MAX - scaled } else { scaled };
    }
}

/// One term of a spreading score: matching pods in the node's domain, the constraint's
/// maxSkew, and its weight (`ln(domains + 2)`).
pub fn spread_raw(terms: &[(i64, i64, f64)]) -> f64 {
    terms
        .iter()
        .map(|(count, max_skew, w)| (*count + *max_skew - 1) as f64 * w)
        .sum()
}

/// Upstream's PodTopologySpread normalisation: fewer matching pods score higher.
pub fn normalize_spread(raw: &[f64]) -> Vec<i64> {
    let max = raw.iter().copied().fold(f64::MIN, f64::max);
    let min = raw.iter().copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|s| {
            if max <= 0.0 {
                MAX
            } else {
                (MAX as f64 * (max + min - s) / max).round() as i64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
    use std::collections::BTreeMap;

    #[test]
    fn resource_strategies() {
        assert_eq!(least_allocated((0, 0), (1000, 1000)), 100);
        assert_eq!(least_allocated((500, 250), (1000, 1000)), 62);
        assert_eq!(least_allocated((2000, 0), (1000, 1000)), 50);
        assert_eq!(most_allocated((500, 250), (1000, 1000)), 37);
        assert_eq!(most_allocated((1000, 1000), (1000, 1000)), 100);
        assert_eq!(most_allocated((0, 0), (0, 0)), 0);
        assert_eq!(balanced((500, 500), (1000, 1000)), 100);
        assert_eq!(balanced((1000, 0), (1000, 1000)), 50);
    }

    #[test]
    fn preferred_affinity_and_normalisation() {
        let node = NodeFacts {
            name: "a".into(),
            labels: BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]),
            ..Default::default()
        };
        let term = |w: i32, v: &str| PreferredSchedulingTerm {
            weight: w,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "disk".into(),
                    operator: "In".into(),
                    values: Some(vec![v.into()]),
                }]),
                match_fields: None,
            },
        };
        assert_eq!(
            preferred_node_affinity(&[term(5, "ssd"), term(7, "hdd"), term(1, "ssd")], &node),
            6
        );
        let mut raw = vec![6, 3, 0];
        normalize(&mut raw, false);
        assert_eq!(raw, vec![100, 50, 0]);
        let mut taints = vec![2, 1, 0];
        normalize(&mut taints, true);
        assert_eq!(taints, vec![0, 50, 100]);
        let mut none = vec![0, 0];
        normalize(&mut none, true);
        assert_eq!(none, vec![100, 100]);
    }

    #[test]
    fn spreading() {
        let w = 2.0_f64.ln();
        // Node with one replica vs none, hostname maxSkew 1.
        let raw = [spread_raw(&[(1, 1, w)]), spread_raw(&[(0, 1, w)])];
        assert_eq!(normalize_spread(&raw), vec![0, 100]);
        let raw = [spread_raw(&[(0, 1, w)]), spread_raw(&[(0, 1, w)])];
        assert_eq!(normalize_spread(&raw), vec![100, 100]);
        // maxSkew 3 softens the preference.
        let raw = [spread_raw(&[(1, 3, w)]), spread_raw(&[(0, 3, w)])];
        assert_eq!(normalize_spread(&raw), vec![67, 100]);
    }
}
