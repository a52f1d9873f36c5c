//! The rules NetworkPolicies want in table `ip skiff-policy` ([`desired`], pure).
//!
//! Layout:
//!
//! - `ingress` and `egress`: two filter base chains at hook forward (priority 0, after
//!   the proxy's DNAT in prerouting, so addresses are the real pods'). Each accepts
//!   established and related traffic, then looks the destination (ingress) or the
//!   source (egress) up in the verdict map `ingress-pods` / `egress-pods`, which
//!   jumps to the chain of an isolated local pod. `ingress` also accepts traffic from
//!   the node's own addresses (`node-addrs`: kubelet probes). Two base chains rather
//!   than one because an accept ends only its own chain: a connection must pass the
//!   sender's egress and the receiver's ingress both.
//! - `in/<ns>/<pod>`, `out/<ns>/<pod>`: the union of what the policies selecting the
//!   pod allow, each allowed match ending in `accept`, and a final `drop`.
//! - Sets `in/<ns>/<policy>/<rule>` and `out/...`: the addresses of the pods a rule's
//!   pod and namespace selectors pick, cluster-wide.
//! - Chains `in/<ns>/<policy>/<rule>/block<n>`: an ipBlock's `except` ranges
//!   (`return`), then `accept`.
//! - Sets `out/<ns>/<policy>/<rule>/named`: an egress rule's named ports, as
//!   `address . protocol . port` of each pod the rule reaches, since each destination
//!   gives the name its own number.
//!
//! CIDRs are matched with one rule each (mask and compare), port ranges with one
//! rule per aligned block of ports, as skiff's nftables layer has no interval sets.

use super::NodeScope;
use crate::network::nft::expr::{self, SCTP, TCP, UDP};
use crate::network::nft::{
    ChainKind, Expr, Hook, HookPoint, SetKey, SetSpec, Verdict, REG32_00, REG_1, REG_VERDICT,
};
use crate::network::proxy::ruleset::{ChainSpec, Ruleset};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The set of the node's own addresses, always let in.
pub const NODE_ADDRS: &str = "node-addrs";
/// The verdict map from an isolated local pod's address to its ingress chain.
pub const INGRESS_PODS: &str = "ingress-pods";
/// The verdict map from an isolated local pod's address to its egress chain.
pub const EGRESS_PODS: &str = "egress-pods";

/// nftables refuses longer chain and set names (`NFT_NAME_MAXLEN` is 256 with NUL).
const MAX_NAME: usize = 200;

/// Which way a policy rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn tag(self) -> &'static str {
        match self {
            Dir::Ingress => "in",
            Dir::Egress => "out",
        }
    }
}

/// A pod as policies see it: running with an address on the pod network.
struct PodView<'a> {
    pod: &'a Pod,
    namespace: &'a str,
    name: &'a str,
    ip: Ipv4Addr,
}

impl PodView<'_> {
    fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }
}

/// The pods with an address on the pod network: not hostNetwork, not finished.
fn pod_views(pods: &[Arc<Pod>]) -> Vec<PodView<'_>> {
    let mut out: Vec<PodView<'_>> = pods
        .iter()
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            if spec.host_network == Some(true) {
                return None;
            }
            let status = p.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip = status.pod_ip.as_deref()?.parse::<Ipv4Addr>().ok()?;
            Some(PodView {
                pod: p,
                namespace: p.metadata.namespace.as_deref().unwrap_or("default"),
                name: p.metadata.name.as_deref()?,
                ip,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
    out
}

/// Compiles a selector; a missing one selects everything, an invalid one nothing
/// (the API server validates selectors, so this only guards against bad input).
fn selector(s: Option<&LabelSelector>) -> Option<Selector> {
    match s {
        None => Some(Selector::default()),
        Some(s) => match Selector::try_from(s.clone()) {
            Ok(sel) => Some(sel),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an invalid label selector in a network policy");
                None
            }
        },
    }
}

fn selects(sel: &Option<Selector>, labels: &BTreeMap<String, String>) -> bool {
    sel.as_ref().is_some_and(|s| s.matches(labels))
}

/// A name nftables accepts: long ones are cut and made unique with a digest.
fn nft_name(s: String) -> String {
    if s.len() <= MAX_NAME {
        return s;
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(s.as_bytes()));
    let head: String = s.chars().take(MAX_NAME - 17).collect();
    format!("{head}-{}", &digest[..16])
}

fn protocol_number(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(TCP),
        "UDP" => Some(UDP),
        "SCTP" => Some(SCTP),
        _ => None,
    }
}

/// Splits the port range `lo..=hi` into aligned blocks `(value, mask)`: a port `p` is
/// in the range when `p & mask == value` for one of them.
pub fn port_blocks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest aligned block starting at `lo` that stays within `hi`.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let mask = !(size - 1) & 0xffff;
        out.push((lo as u16, mask as u16));
        lo += size;
    }
    out
}

/// The alternatives a rule's `ports` allow, each a list of expressions (an empty list
/// matches everything). `named` resolves a named port for a protocol to numbers.
fn port_matches(
    ports: Option<&[NetworkPolicyPort]>,
    named: &dyn Fn(&str, &str) -> BTreeSet<u16>,
) -> Vec<Vec<Expr>> {
    let ports = match ports {
        None | Some([]) => return vec![vec![]],
        Some(p) => p,
    };
    let mut out = Vec::new();
    for p in ports {
        let proto_name = p.protocol.as_deref().unwrap_or("TCP");
        let Some(proto) = protocol_number(Some(proto_name)) else {
            tracing::warn!(
                protocol = proto_name,
                "ignoring a network policy port of an unknown protocol"
            );
            continue;
        };
        let ranges: Vec<(u16, u16)> = match &p.port {
            None => vec![(0, u16::MAX)],
            Some(IntOrString::Int(n)) => {
                let Ok(lo) = u16::try_from(*n) else { continue };
                let hi = p
                    .end_port
                    .and_then(|e| u16::try_from(e).ok())
                    .filter(|e| *e >= lo)
                    .unwrap_or(lo);
                vec![(lo, hi)]
            }
            Some(IntOrString::String(name)) => named(name, proto_name)
                .into_iter()
                .map(|n| (n, n))
                .collect(),
        };
        for (lo, hi) in ranges {
            for (value, mask) in port_blocks(lo, hi) {
                let mut e = expr::l4proto_is(proto);
                if mask != 0 {
                    e.push(expr::th_dport(REG_1));
                    if mask != u16::MAX {
                        e.push(Expr::Bitwise {
                            sreg: REG_1,
                            dreg: REG_1,
                            mask: mask.to_be_bytes().to_vec(),
                            xor: vec![0; 2],
                        });
                    }
                    e.push(expr::eq(REG_1, value.to_be_bytes()));
                }
                out.push(e);
            }
        }
    }
    out
}

/// The numbers `pod`'s containers give port `name` of protocol `proto`.
fn container_ports(pod: &Pod, name: &str, proto: &str) -> BTreeSet<u16> {
    let Some(spec) = pod.spec.as_ref() else {
        return BTreeSet::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.name.as_deref() == Some(name))
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == proto)
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect()
}

/// What the decision works from.
struct Inputs<'a> {
    pods: Vec<PodView<'a>>,
    namespaces: BTreeMap<&'a str, BTreeMap<String, String>>,
}

impl Inputs<'_> {
    /// The pods a selector peer picks, for a policy in namespace `ns`.
    fn peer_pods(&self, ns: &str, peer: &NetworkPolicyPeer) -> Vec<&PodView<'_>> {
        let pods = selector(peer.pod_selector.as_ref());
        let namespaces = peer.namespace_selector.as_ref().map(|s| selector(Some(s)));
        let empty = BTreeMap::new();
        self.pods
            .iter()
            .filter(|p| match &namespaces {
                None => p.namespace == ns,
                Some(nsel) => selects(nsel, self.namespaces.get(p.namespace).unwrap_or(&empty)),
            })
            .filter(|p| selects(&pods, p.labels()))
            .collect()
    }
}

/// What the rules of one policy rule match on the far side: the peer address's
/// alternatives, each with the verdict to take once the ports match too.
fn peer_matches(
    dir: Dir,
    rule_id: &str,
    ns: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    inputs: &Inputs<'_>,
    rs: &mut Ruleset,
) -> Vec<(Vec<Expr>, Verdict)> {
    let peers = match peers {
        None | Some([]) => return vec![(vec![], Verdict::Accept)],
        Some(p) => p,
    };
    let load = |reg| match dir {
        Dir::Ingress => expr::ip_saddr(reg),
        Dir::Egress => expr::ip_daddr(reg),
    };
    let addr_in = |net: Ipv4Net, inside: bool| {
        let mut e = vec![load(REG_1)];
        e.extend(expr::in_cidr(REG_1, net, inside));
        e
    };
    let mut out = Vec::new();

    let selector_peers: Vec<&NetworkPolicyPeer> =
        peers.iter().filter(|p| p.ip_block.is_none()).collect();
    if !selector_peers.is_empty() {
        let set = nft_name(rule_id.to_string());
        // The same for every pod the policy selects: made for the first.
        if !rs.sets.contains_key(&set) {
            let addrs: BTreeSet<Ipv4Addr> = selector_peers
                .iter()
                .flat_map(|p| inputs.peer_pods(ns, p))
                .map(|p| p.ip)
                .collect();
            rs.sets.insert(set.clone(), addr_set());
            rs.elements.insert(
                set.clone(),
                addrs.iter().map(|a| (a.octets().to_vec(), None)).collect(),
            );
        }
        out.push((
            vec![
                load(REG_1),
                Expr::Lookup {
                    set,
                    sreg: REG_1,
                    dreg: None,
                    invert: false,
                },
            ],
            Verdict::Accept,
        ));
    }

    for (n, block) in peers.iter().filter_map(|p| p.ip_block.as_ref()).enumerate() {
        let Some((cidr, excepts)) = block_nets(block) else {
            continue;
        };
        if excepts.is_empty() {
            out.push((addr_in(cidr, true), Verdict::Accept));
            continue;
        }
        let chain = nft_name(format!("{rule_id}/block{n}"));
        let mut rules: Vec<Vec<Expr>> = excepts
            .iter()
            .map(|e| {
                let mut r = addr_in(*e, true);
                r.push(Expr::Verdict(Verdict::Return));
                r
            })
            .collect();
        rules.push(vec![Expr::Verdict(Verdict::Accept)]);
        rs.chains
            .insert(chain.clone(), ChainSpec { hook: None, rules });
        out.push((addr_in(cidr, true), Verdict::Jump(chain)));
    }
    out
}

/// An ipBlock's range and exceptions, masked to their networks; `None` (with a log)
/// when the range is not IPv4 or an exception cannot be read, since an exception that
/// cannot be read would let too much in: the whole block is passed over.
fn block_nets(block: &IPBlock) -> Option<(Ipv4Net, Vec<Ipv4Net>)> {
    let Ok(cidr) = block.cidr.parse::<Ipv4Net>() else {
        tracing::debug!(cidr = %block.cidr, "skipping an ipBlock that is not IPv4");
        return None;
    };
    let excepts: Result<Vec<Ipv4Net>, _> = block
        .except
        .iter()
        .flatten()
        .map(|e| e.parse::<Ipv4Net>().map(|n| n.trunc()))
        .collect();
    match excepts {
        Ok(excepts) => Some((cidr.trunc(), excepts)),
        Err(_) => {
            tracing::warn!(cidr = %block.cidr, "skipping an ipBlock with an unreadable except");
            None
        }
    }
}

fn addr_set() -> SetSpec {
    SetSpec {
        key: SetKey::Ipv4,
        verdict_map: false,
        timeout: false,
    }
}

fn vmap() -> SetSpec {
    SetSpec {
        key: SetKey::Ipv4,
        verdict_map: true,
        timeout: false,
    }
}

/// The chains and sets that do not depend on policies.
fn base(node: &NodeScope, rs: &mut Ruleset) {
    rs.sets.insert(NODE_ADDRS.into(), addr_set());
    rs.elements.insert(
        NODE_ADDRS.into(),
        node.host_addrs
            .iter()
            .map(|a| (a.octets().to_vec(), None))
            .collect(),
    );
    for m in [INGRESS_PODS, EGRESS_PODS] {
        rs.sets.insert(m.into(), vmap());
        rs.elements.insert(m.into(), BTreeMap::new());
    }
    let established = {
        let mut r = expr::ct_state_any(expr::CT_ESTABLISHED | expr::CT_RELATED);
        r.push(Expr::Verdict(Verdict::Accept));
        r
    };
    let dispatch = |load: Expr, map: &str| {
        vec![
            load,
            Expr::Lookup {
                set: map.to_string(),
                sreg: REG_1,
                dreg: Some(REG_VERDICT),
                invert: false,
            },
        ]
    };
    let hook = Some(Hook {
        kind: ChainKind::Filter,
        hook: HookPoint::Forward,
        priority: 0,
    });
    rs.chains.insert(
        "ingress".into(),
        ChainSpec {
            hook,
            rules: vec![
                established.clone(),
                vec![
                    expr::ip_saddr(REG_1),
                    Expr::Lookup {
                        set: NODE_ADDRS.into(),
                        sreg: REG_1,
                        dreg: None,
                        invert: false,
                    },
                    Expr::Verdict(Verdict::Accept),
                ],
                dispatch(expr::ip_daddr(REG_1), INGRESS_PODS),
            ],
        },
    );
    rs.chains.insert(
        "egress".into(),
        ChainSpec {
            hook,
            rules: vec![established, dispatch(expr::ip_saddr(REG_1), EGRESS_PODS)],
        },
    );
}

/// A policy rule's far side (`from` or `to`) and its ports.
type RuleParts<'a> = (
    Option<&'a [NetworkPolicyPeer]>,
    Option<&'a [NetworkPolicyPort]>,
);

/// What `policy` (which selects `target`) allows in direction `dir`: rules ending in
/// `accept` (or a jump to an ipBlock's chain); sets and chains they use go into `rs`.
fn allow_rules(
    dir: Dir,
    target: &PodView<'_>,
    policy: &NetworkPolicy,
    inputs: &Inputs<'_>,
    rs: &mut Ruleset,
) -> Vec<Vec<Expr>> {
    let mut out = Vec::new();
    let Some(spec) = policy.spec.as_ref() else {
        return out;
    };
    let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
    let name = policy.metadata.name.as_deref().unwrap_or("");
    let policy_rules: Vec<RuleParts<'_>> = match dir {
        Dir::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_deref(), r.ports.as_deref()))
            .collect(),
        Dir::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_deref(), r.ports.as_deref()))
            .collect(),
    };
    for (i, (peers, ports)) in policy_rules.into_iter().enumerate() {
        let rule_id = format!("{}/{ns}/{name}/{i}", dir.tag());
        // A named port is the destination pod's. For ingress that is the target; for
        // egress each destination pod has its own, so named ports are matched below
        // as pairs of a peer pod's address and its number, not here.
        let named = |port: &str, proto: &str| -> BTreeSet<u16> {
            match dir {
                Dir::Ingress => container_ports(target.pod, port, proto),
                Dir::Egress => BTreeSet::new(),
            }
        };
        let port_alts = port_matches(ports, &named);
        let peer_alts = peer_matches(dir, &rule_id, ns, peers, inputs, rs);
        for (peer, verdict) in &peer_alts {
            for port in &port_alts {
                let mut r = peer.clone();
                r.extend(port.iter().cloned());
                r.push(Expr::Verdict(verdict.clone()));
                out.push(r);
            }
        }
        if dir == Dir::Egress {
            out.extend(egress_named_ports(&rule_id, ns, peers, ports, inputs, rs));
        }
    }
    out
}

/// An egress rule's named ports: the rule that accepts `ip daddr . meta l4proto . th
/// dport` in a set of each peer pod's address with the number its containers give the
/// name. Peer pods are those the rule's selectors pick or whose address is in one of
/// its ipBlocks (all pods when it names no peer). Nothing when no port is named.
fn egress_named_ports(
    rule_id: &str,
    ns: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    inputs: &Inputs<'_>,
    rs: &mut Ruleset,
) -> Option<Vec<Expr>> {
    let named: Vec<(&str, &str, u8)> = ports
        .into_iter()
        .flatten()
        .filter_map(|p| match &p.port {
            Some(IntOrString::String(name)) => {
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                Some((name.as_str(), proto, protocol_number(Some(proto))?))
            }
            _ => None,
        })
        .collect();
    if named.is_empty() {
        return None;
    }
    let set = nft_name(format!("{rule_id}/named"));
    let mut rule = expr::service_key_load();
    rule.push(Expr::Lookup {
        set: set.clone(),
        sreg: REG32_00,
        dreg: None,
        invert: false,
    });
    rule.push(Expr::Verdict(Verdict::Accept));
    // The same for every pod the policy selects: made for the first.
    if rs.sets.contains_key(&set) {
        return Some(rule);
    }
    let candidates: Vec<&PodView<'_>> = match peers {
        None | Some([]) => inputs.pods.iter().collect(),
        Some(peers) => {
            let picked: BTreeSet<Ipv4Addr> = peers
                .iter()
                .filter(|p| p.ip_block.is_none())
                .flat_map(|p| inputs.peer_pods(ns, p))
                .map(|p| p.ip)
                .collect();
            let blocks: Vec<(Ipv4Net, Vec<Ipv4Net>)> = peers
                .iter()
                .filter_map(|p| p.ip_block.as_ref())
                .filter_map(block_nets)
                .collect();
            inputs
                .pods
                .iter()
                .filter(|pod| {
                    picked.contains(&pod.ip) || blocks.iter().any(|b| in_block(pod.ip, b))
                })
                .collect()
        }
    };
    let mut elements = BTreeMap::new();
    for pod in candidates {
        for (name, proto, number) in &named {
            for port in container_ports(pod.pod, name, proto) {
                elements.insert(expr::service_key(pod.ip, *number, port), None);
            }
        }
    }
    rs.sets.insert(
        set.clone(),
        SetSpec {
            key: SetKey::Ipv4ProtoPort,
            verdict_map: false,
            timeout: false,
        },
    );
    rs.elements.insert(set, elements);
    Some(rule)
}

/// Whether `ip` is in a block's range and in none of its exceptions.
fn in_block(ip: Ipv4Addr, (cidr, excepts): &(Ipv4Net, Vec<Ipv4Net>)) -> bool {
    cidr.contains(&ip) && !excepts.iter().any(|e| e.contains(&ip))
}

/// The table's contents for this node: pods are enforced when they run here
/// (`spec.nodeName` is `node.node_name`) with an address on the pod network; peers
/// are matched among all pods of the cluster.
pub fn desired(
    node: &NodeScope,
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
    policies: &[Arc<NetworkPolicy>],
) -> Ruleset {
    let mut rs = Ruleset::default();
    base(node, &mut rs);
    let inputs = Inputs {
        pods: pod_views(pods),
        namespaces: namespaces
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.as_deref()?,
                    n.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect(),
    };

    let mut policies: Vec<&NetworkPolicy> = policies.iter().map(|p| p.as_ref()).collect();
    policies.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    // (policy, its pod selector, whether it isolates ingress, egress)
    let compiled: Vec<(&NetworkPolicy, Option<Selector>, bool, bool)> = policies
        .into_iter()
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            let has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            let (ingress, egress) = match &spec.policy_types {
                Some(t) if !t.is_empty() => (
                    t.iter().any(|t| t == "Ingress"),
                    t.iter().any(|t| t == "Egress"),
                ),
                // As upstream defaults it: Ingress, and Egress when there are egress rules.
                _ => (true, has_egress),
            };
            Some((p, selector(spec.pod_selector.as_ref()), ingress, egress))
        })
        .collect();

    let local = inputs.pods.iter().filter(|p| {
        p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node.node_name)
    });
    for target in local {
        for dir in [Dir::Ingress, Dir::Egress] {
            let mut rules: Vec<Vec<Expr>> = Vec::new();
            let mut isolated = false;
            for (policy, sel, ingress, egress) in &compiled {
                let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
                let applies = match dir {
                    Dir::Ingress => *ingress,
                    Dir::Egress => *egress,
                };
                if !applies || ns != target.namespace || !selects(sel, target.labels()) {
                    continue;
                }
                isolated = true;
                rules.extend(allow_rules(dir, target, policy, &inputs, &mut rs));
            }
            if !isolated {
                continue;
            }
            rules.push(vec![Expr::Counter, Expr::Verdict(Verdict::Drop)]);
            let chain = nft_name(format!(
                "{}/{}/{}",
                dir.tag(),
                target.namespace,
                target.name
            ));
            let map = match dir {
                Dir::Ingress => INGRESS_PODS,
                Dir::Egress => EGRESS_PODS,
            };
            rs.elements.entry(map.to_string()).or_default().insert(
                target.ip.octets().to_vec(),
                Some(Verdict::Jump(chain.clone())),
            );
            rs.chains.insert(chain, ChainSpec { hook: None, rules });
        }
    }
    rs
}
