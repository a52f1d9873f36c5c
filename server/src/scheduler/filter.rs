//! Filters: may this pod go on this node? Pure functions over plain values, each giving
//! upstream's reason when the answer is no, and the message built from those reasons.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::cache::{HostPort, NodeFacts, NodeInfo, PodFacts, UNSCHEDULABLE};
use super::resources::Resources;

/// Why a node cannot take a pod, worded as upstream's plugins word it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The node is cordoned (NodeUnschedulable).
    Unschedulable,
    /// The pod names another node (NodeName).
    NodeName,
    /// A NoSchedule/NoExecute taint the pod does not tolerate (TaintToleration).
    Taint {
        /// The taint's key.
        key: String,
        /// The taint's value.
        value: String,
    },
    /// nodeSelector or required node affinity (NodeAffinity).
    NodeAffinity,
    /// A host port is taken (NodePorts).
    HostPorts,
    /// Not enough of a resource left (NodeResourcesFit).
    Insufficient(String),
    /// No pod slots left (NodeResourcesFit).
    TooManyPods,
    /// A pod here matches the pod's required anti-affinity (InterPodAffinity).
    AntiAffinity,
    /// A pod here has required anti-affinity against this pod (InterPodAffinity).
    ExistingAntiAffinity,
    /// The pod's required pod affinity is not met here (InterPodAffinity).
    Affinity,
    /// maxSkew would be exceeded (PodTopologySpread).
    Spread,
    /// The node lacks a topology key of a DoNotSchedule constraint (PodTopologySpread).
    SpreadMissingLabel,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Reason::Taint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::HostPorts => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::AntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
            Reason::Affinity => f.write_str("node(s) didn't match pod affinity rules"),
            Reason::Spread => f.write_str("node(s) didn't match pod topology spread constraints"),
            Reason::SpreadMissingLabel => f.write_str(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ),
        }
    }
}

impl Reason {
    /// Whether evicting lower-priority pods could ever remove this reason (upstream's
    /// `Unschedulable`, as opposed to `UnschedulableAndUnresolvable`).
    pub fn preemption_may_help(&self) -> bool {
        matches!(
            self,
            Reason::HostPorts
                | Reason::Insufficient(_)
                | Reason::TooManyPods
                | Reason::AntiAffinity
                | Reason::ExistingAntiAffinity
                | Reason::Spread
        )
    }
}

/// Cordoned nodes take only pods that tolerate `node.kubernetes.io/unschedulable`.
pub fn node_unschedulable(node: &NodeFacts, tolerations: &[Toleration]) -> Result<(), Reason> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: UNSCHEDULABLE.to_owned(),
        effect: "NoSchedule".to_owned(),
        ..Default::default()
    };
    if tolerations.iter().any(|t| tolerates(t, &taint)) {
        Ok(())
    } else {
        Err(Reason::Unschedulable)
    }
}

/// A pod that names a node goes there only.
pub fn node_name(wanted: Option<&str>, node: &str) -> Result<(), Reason> {
    match wanted {
        Some(w) if !w.is_empty() && w != node => Err(Reason::NodeName),
        _ => Ok(()),
    }
}

/// Whether `t` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
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
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first NoSchedule or NoExecute taint that no toleration tolerates.
pub fn taints(taints: &[Taint], tolerations: &[Toleration]) -> Result<(), Reason> {
    for taint in taints {
        if taint.effect != "NoSchedule" && taint.effect != "NoExecute" {
            continue;
        }
        if !tolerations.iter().any(|t| tolerates(t, taint)) {
            return Err(Reason::Taint {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// How many PreferNoSchedule taints the pod does not tolerate (scored, not filtered).
pub fn intolerable_prefer_no_schedule(taints: &[Taint], tolerations: &[Toleration]) -> i64 {
    let relevant: Vec<&Toleration> = tolerations
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !relevant.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

/// One node selector requirement against a value (`None`: the node lacks the label).
pub fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    let number = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(number), values) else {
                return false;
            };
            let Some(want) = number(want) else {
                return false;
            };
            if req.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// A node selector term: all its expressions and fields match. An empty term matches no
/// node, as upstream.
pub fn term_matches(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(name);
            r.key == "metadata.name" && requirement_matches(r, value)
        })
}

/// nodeSelector and required node affinity (terms are ORed).
pub fn node_affinity(
    node: &NodeFacts,
    node_selector: Option<&BTreeMap<String, String>>,
    required: Option<&NodeSelector>,
) -> Result<(), Reason> {
    if let Some(sel) = node_selector {
        if !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
            return Err(Reason::NodeAffinity);
        }
    }
    if let Some(required) = required {
        if !required
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, &node.name, &node.labels))
        {
            return Err(Reason::NodeAffinity);
        }
    }
    Ok(())
}

/// Host ports the pod wants must be free on the node.
pub fn host_ports(wanted: &[HostPort], node: &NodeInfo) -> Result<(), Reason> {
    if wanted.iter().any(|p| node.port_in_use(p)) {
        Err(Reason::HostPorts)
    } else {
        Ok(())
    }
}

/// Requests against what is left of allocatable. All failing resources are reported.
pub fn resources(
    want: &Resources,
    allocatable: &Resources,
    requested: &Resources,
) -> Result<(), Vec<Reason>> {
    let mut why = Vec::new();
    if requested.pods + 1 > allocatable.pods {
        why.push(Reason::TooManyPods);
    }
    let short = |want: i64, alloc: i64, used: i64| want > 0 && want > alloc - used;
    if short(want.milli_cpu, allocatable.milli_cpu, requested.milli_cpu) {
        why.push(Reason::Insufficient("cpu".into()));
    }
    if short(want.memory, allocatable.memory, requested.memory) {
        why.push(Reason::Insufficient("memory".into()));
    }
    if short(want.ephemeral, allocatable.ephemeral, requested.ephemeral) {
        why.push(Reason::Insufficient("ephemeral-storage".into()));
    }
    for (name, w) in &want.scalar {
        let alloc = allocatable.scalar.get(name).copied().unwrap_or(0);
        let used = requested.scalar.get(name).copied().unwrap_or(0);
        if short(*w, alloc, used) {
            why.push(Reason::Insufficient(name.clone()));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why)
    }
}

/// A label selector against labels. `None` matches nothing, `{}` everything.
pub fn selector_matches(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else {
        return false;
    };
    if !sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    })
}

/// Whether a pod affinity term of a pod in `owner_ns` selects `pod`. Namespaces: the listed
/// ones; all when `namespaceSelector` is `{}`; otherwise the owner's. (A non-empty
/// namespaceSelector would need namespace labels, which the scheduler does not watch: it
/// counts as the listed namespaces plus the owner's.)
pub fn term_selects(term: &PodAffinityTerm, owner_ns: &str, pod: &PodFacts) -> bool {
    let listed = term.namespaces.as_deref().unwrap_or(&[]);
    let all = term.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    });
    let ns_ok = all
        || listed.contains(&pod.namespace)
        || ((listed.is_empty() || term.namespace_selector.is_some()) && pod.namespace == owner_ns);
    ns_ok && selector_matches(term.label_selector.as_ref(), &pod.labels)
}

/// Topology domains (label key → values) a rule puts a pod in or keeps it out of.
pub type Domains = HashMap<String, HashSet<String>>;

fn in_domains(labels: &BTreeMap<String, String>, domains: &Domains) -> bool {
    domains
        .iter()
        .any(|(k, values)| labels.get(k).is_some_and(|v| values.contains(v)))
}

/// Required anti-affinity, both ways: `own` are the domains holding pods the pod's terms
/// select; `existing` those whose pods' terms select the pod. The pod's own terms are
/// checked first, as upstream does.
pub fn anti_affinity(
    labels: &BTreeMap<String, String>,
    own: &Domains,
    existing: &Domains,
) -> Result<(), Reason> {
    if in_domains(labels, own) {
        return Err(Reason::AntiAffinity);
    }
    if in_domains(labels, existing) {
        return Err(Reason::ExistingAntiAffinity);
    }
    Ok(())
}

/// Required pod affinity: for every term, the node is in a domain holding a selected pod.
/// `None` means no pod anywhere matches and the pod matches its own terms (the first of a
/// group goes anywhere).
pub fn pod_affinity(
    labels: &BTreeMap<String, String>,
    terms: Option<&[(String, HashSet<String>)]>,
) -> Result<(), Reason> {
    let Some(terms) = terms else {
        return Ok(());
    };
    if terms
        .iter()
        .all(|(k, values)| labels.get(k).is_some_and(|v| values.contains(v)))
    {
        Ok(())
    } else {
        Err(Reason::Affinity)
    }
}

/// One DoNotSchedule topology spread constraint, counted over the cluster.
#[derive(Debug, Clone, Default)]
pub struct SpreadCheck {
    /// The topology key.
    pub key: String,
    /// maxSkew.
    pub max_skew: i64,
    /// Matching pods per domain (every eligible domain present, possibly 0).
    pub counts: HashMap<String, i64>,
    /// The smallest count over domains (0 when fewer domains than minDomains).
    pub min: i64,
    /// 1 when the pod itself matches the selector.
    pub self_match: i64,
}

/// Topology spread (DoNotSchedule): placing the pod here keeps every skew ≤ maxSkew.
pub fn spread(labels: &BTreeMap<String, String>, checks: &[SpreadCheck]) -> Result<(), Reason> {
    for c in checks {
        let Some(v) = labels.get(&c.key) else {
            return Err(Reason::SpreadMissingLabel);
        };
        let count = c.counts.get(v).copied().unwrap_or(0);
        if count + c.self_match - c.min > c.max_skew {
            return Err(Reason::Spread);
        }
    }
    Ok(())
}

/// The message when the cluster has no nodes at all.
pub const NO_NODES: &str = "no nodes available to schedule pods";

/// Upstream's FitError text: `0/<node_count> nodes are available: ` then `reasons` (every
/// reason of every node, in one list) counted and sorted as strings, then a period.
pub fn fit_error(node_count: usize, reasons: impl IntoIterator<Item = String>) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut parts: Vec<String> = counts
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    parts.sort();
    let mut msg = format!("0/{node_count} nodes are available:");
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn node(name: &str, l: &[(&str, &str)]) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            labels: labels(l),
            ..Default::default()
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.to_owned()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        Toleration {
            key: s(key),
            operator: s(op),
            value: s(value),
            effect: s(effect),
            toleration_seconds: None,
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn unschedulable_nodes() {
        let mut n = node("a", &[]);
        assert_eq!(node_unschedulable(&n, &[]), Ok(()));
        n.unschedulable = true;
        assert_eq!(node_unschedulable(&n, &[]), Err(Reason::Unschedulable));
        let tol = toleration(UNSCHEDULABLE, "Exists", "", "NoSchedule");
        assert_eq!(node_unschedulable(&n, &[tol]), Ok(()));
    }

    #[test]
    fn node_names() {
        assert_eq!(node_name(None, "a"), Ok(()));
        assert_eq!(node_name(Some("a"), "a"), Ok(()));
        assert_eq!(node_name(Some("b"), "a"), Err(Reason::NodeName));
    }

    #[test]
    fn taints_and_tolerations() {
        let cp = taint("node-role.kubernetes.io/control-plane", "", "NoSchedule");
        let gpu = taint("gpu", "true", "NoExecute");
        let soft = taint("soft", "", "PreferNoSchedule");
        let all = [cp.clone(), gpu.clone(), soft.clone()];
        assert_eq!(
            taints(&all, &[]),
            Err(Reason::Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: "".into()
            })
        );
        let tols = [
            toleration("node-role.kubernetes.io/control-plane", "Exists", "", ""),
            toleration("gpu", "Equal", "true", "NoExecute"),
        ];
        assert_eq!(taints(&all, &tols), Ok(()));
        let wrong_value = [tols[0].clone(), toleration("gpu", "", "false", "")];
        assert_eq!(
            taints(&all, &wrong_value),
            Err(Reason::Taint {
                key: "gpu".into(),
                value: "true".into()
            })
        );
        // An empty key with Exists tolerates everything.
        assert_eq!(taints(&all, &[toleration("", "Exists", "", "")]), Ok(()));
        // The effect must match when given.
        assert!(!tolerates(
            &toleration("gpu", "Exists", "", "NoSchedule"),
            &gpu
        ));
        assert_eq!(intolerable_prefer_no_schedule(&all, &[]), 1);
        assert_eq!(
            intolerable_prefer_no_schedule(&all, &[toleration("soft", "Exists", "", "")]),
            0
        );
        assert_eq!(
            Reason::Taint {
                key: "k".into(),
                value: "".into()
            }
            .to_string(),
            "node(s) had untolerated taint {k: }"
        );
    }

    #[test]
    fn node_selector_requirements() {
        assert!(requirement_matches(&req("k", "In", &["a", "b"]), Some("b")));
        assert!(!requirement_matches(&req("k", "In", &["a"]), None));
        assert!(requirement_matches(&req("k", "NotIn", &["a"]), None));
        assert!(!requirement_matches(&req("k", "NotIn", &["a"]), Some("a")));
        assert!(requirement_matches(&req("k", "Exists", &[]), Some("")));
        assert!(requirement_matches(&req("k", "DoesNotExist", &[]), None));
        assert!(requirement_matches(&req("k", "Gt", &["5"]), Some("6")));
        assert!(!requirement_matches(&req("k", "Gt", &["5"]), Some("5")));
        assert!(requirement_matches(&req("k", "Lt", &["5"]), Some("-1")));
        assert!(!requirement_matches(&req("k", "Lt", &["5"]), Some("x")));
        assert!(!requirement_matches(&req("k", "Bogus", &[]), Some("x")));
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let n = node("a", &[("zone", "z1"), ("disk", "ssd")]);
        let sel = labels(&[("disk", "ssd")]);
        assert_eq!(node_affinity(&n, Some(&sel), None), Ok(()));
        let sel = labels(&[("disk", "hdd")]);
        assert_eq!(
            node_affinity(&n, Some(&sel), None),
            Err(Reason::NodeAffinity)
        );
        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        let aff = NodeSelector {
            node_selector_terms: vec![
                term(vec![req("zone", "In", &["z2"])], vec![]),
                term(
                    vec![req("zone", "In", &["z1"]), req("gpu", "DoesNotExist", &[])],
                    vec![],
                ),
            ],
        };
        assert_eq!(node_affinity(&n, None, Some(&aff)), Ok(()));
        let by_name = NodeSelector {
            node_selector_terms: vec![term(vec![], vec![req("metadata.name", "In", &["b"])])],
        };
        assert_eq!(
            node_affinity(&n, None, Some(&by_name)),
            Err(Reason::NodeAffinity)
        );
        let by_name = NodeSelector {
            node_selector_terms: vec![term(vec![], vec![req("metadata.name", "In", &["a"])])],
        };
        assert_eq!(node_affinity(&n, None, Some(&by_name)), Ok(()));
        let empty = NodeSelector {
            node_selector_terms: vec![term(vec![], vec![])],
        };
        assert_eq!(
            node_affinity(&n, None, Some(&empty)),
            Err(Reason::NodeAffinity)
        );
    }

    #[test]
    fn host_port_conflicts() {
        let port = |proto: &str, ip: &str, port: i32| HostPort {
            protocol: proto.into(),
            ip: ip.into(),
            port,
        };
        let mut info = NodeInfo::default();
        info.ports.insert(port("TCP", "10.0.0.1", 80), 1);
        assert_eq!(host_ports(&[port("TCP", "10.0.0.2", 80)], &info), Ok(()));
        assert_eq!(host_ports(&[port("UDP", "0.0.0.0", 80)], &info), Ok(()));
        assert_eq!(host_ports(&[port("TCP", "0.0.0.0", 81)], &info), Ok(()));
        assert_eq!(
            host_ports(&[port("TCP", "0.0.0.0", 80)], &info),
            Err(Reason::HostPorts)
        );
        assert_eq!(
            host_ports(&[port("TCP", "10.0.0.1", 80)], &info),
            Err(Reason::HostPorts)
        );
    }

    #[test]
    fn resource_fit() {
        let r = |cpu: i64, mem: i64, pods: i64| Resources {
            milli_cpu: cpu,
            memory: mem,
            pods,
            ..Default::default()
        };
        let alloc = r(4000, 8 << 30, 110);
        assert_eq!(
            resources(&r(1000, 1 << 30, 1), &alloc, &r(3000, 0, 5)),
            Ok(())
        );
        assert_eq!(
            resources(&r(1001, 1 << 30, 1), &alloc, &r(3000, 7 << 30, 5)),
            Err(vec![Reason::Insufficient("cpu".into())])
        );
        assert_eq!(
            resources(&r(1001, 2 << 30, 1), &alloc, &r(3000, 7 << 30, 110)),
            Err(vec![
                Reason::TooManyPods,
                Reason::Insufficient("cpu".into()),
                Reason::Insufficient("memory".into())
            ])
        );
        // A pod without requests fits a full node (but not one with no pod slots).
        assert_eq!(resources(&r(0, 0, 1), &alloc, &r(4000, 8 << 30, 5)), Ok(()));
        let mut gpu = r(0, 0, 1);
        gpu.scalar.insert("nvidia.com/gpu".into(), 1);
        assert_eq!(
            resources(&gpu, &alloc, &r(0, 0, 0)),
            Err(vec![Reason::Insufficient("nvidia.com/gpu".into())])
        );
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(!selector_matches(None, &l));
        assert!(selector_matches(Some(&LabelSelector::default()), &l));
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["back".into()]),
            }]),
        };
        assert!(selector_matches(Some(&sel), &l));
        assert!(!selector_matches(Some(&sel), &labels(&[("app", "db")])));
    }

    #[test]
    fn inter_pod_anti_affinity_and_affinity() {
        let term = PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                match_expressions: None,
            }),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        };
        let web = PodFacts {
            namespace: "default".into(),
            labels: labels(&[("app", "web")]),
            ..Default::default()
        };
        assert!(term_selects(&term, "default", &web));
        assert!(!term_selects(&term, "other", &web));
        let mut everywhere = term.clone();
        everywhere.namespace_selector = Some(LabelSelector::default());
        assert!(term_selects(&everywhere, "other", &web));

        let host_a = labels(&[("kubernetes.io/hostname", "a")]);
        let host_b = labels(&[("kubernetes.io/hostname", "b")]);
        let mut own = Domains::new();
        own.entry("kubernetes.io/hostname".into())
            .or_default()
            .insert("a".into());
        let none = Domains::new();
        assert_eq!(
            anti_affinity(&host_a, &own, &none),
            Err(Reason::AntiAffinity)
        );
        assert_eq!(anti_affinity(&host_b, &own, &none), Ok(()));
        assert_eq!(
            anti_affinity(&host_a, &none, &own),
            Err(Reason::ExistingAntiAffinity)
        );
        let terms = vec![(
            "kubernetes.io/hostname".to_owned(),
            HashSet::from(["a".to_owned()]),
        )];
        assert_eq!(pod_affinity(&host_a, Some(&terms)), Ok(()));
        assert_eq!(pod_affinity(&host_b, Some(&terms)), Err(Reason::Affinity));
        assert_eq!(pod_affinity(&host_b, None), Ok(()));
    }

    #[test]
    fn topology_spread_filter() {
        let check = SpreadCheck {
            key: "zone".into(),
            max_skew: 1,
            counts: HashMap::from([("z1".to_owned(), 2), ("z2".to_owned(), 1)]),
            min: 1,
            self_match: 1,
        };
        assert_eq!(
            spread(&labels(&[("zone", "z2")]), std::slice::from_ref(&check)),
            Ok(())
        );
        assert_eq!(
            spread(&labels(&[("zone", "z1")]), std::slice::from_ref(&check)),
            Err(Reason::Spread)
        );
        assert_eq!(
            spread(&labels(&[]), &[check]),
            Err(Reason::SpreadMissingLabel)
        );
    }

    #[test]
    fn fit_errors_read_like_upstream() {
        let cp = Reason::Taint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: "".into(),
        };
        let reasons = [Reason::Insufficient("cpu".into()), cp.clone(), cp];
        assert_eq!(
            fit_error(3, reasons.iter().map(ToString::to_string)),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }."
        );
        let reasons = [
            Reason::Insufficient("cpu".into()),
            Reason::Insufficient("memory".into()),
        ];
        assert_eq!(
            fit_error(1, reasons.iter().map(ToString::to_string)),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
        // Sorted as strings, as upstream does: "10 ..." before "2 ...".
        let mut many = vec!["b".to_owned(); 10];
        many.extend(["a".to_owned(), "a".to_owned()]);
        assert_eq!(fit_error(12, many), "0/12 nodes are available: 10 b, 2 a.");
    }
}
