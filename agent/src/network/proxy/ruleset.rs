//! The rules skiff wants in its table ([`Parts`] of [`Ruleset`]s, from [`desired`])
//! and the batch that turns what is programmed into what is wanted ([`plan`]). Both
//! pure.
//!
//! Layout of table `ip skiff`:
//!
//! - `nat-prerouting`, `nat-output` (dstnat): `jump services`. `services` looks
//!   `ip daddr . meta l4proto . th dport` up in the verdict map `service-ips` (cluster
//!   and external addresses), then, for a node address, `meta l4proto . th dport` in
//!   `service-nodeports`.
//! - Per Service port: `svc-<id>` (traffic to the cluster address: mark for masquerade
//!   when from outside the cluster CIDR, session affinity, then a random pick through
//!   the map `svc-<id>-pick`), `ext-<id>` for NodePorts and external addresses
//!   (masquerade and `svc-<id>`, or for policy Local only this node's endpoints through
//!   `ext-<id>-pick`), `fw-<id>` in front of `ext-<id>` for a load balancer's
//!   addresses when `loadBalancerSourceRanges` limits them (the allowed sources go on,
//!   the rest are dropped), and per endpoint `ep-<id>/<ip>:<port>` (hairpin masquerade,
//!   affinity update, DNAT).
//! - `filter-input`, `filter-forward`, `filter-output`: for a connection's first packet,
//!   `jump endpoints-check`, which rejects connections to Services without ready
//!   endpoints (maps `no-endpoint-services`, `no-endpoint-nodeports`); forward also
//!   accepts established connections first and the cluster CIDR's traffic.
//! - `nat-postrouting` (srcnat): masquerade what was marked, and the pods' traffic to
//!   outside the cluster CIDR.
//! - `mss-clamp` (filter, postrouting): a SYN's MSS lowered to what its route carries.
//!   Pods and nodes reach the service CIDR in full-size frames; a connection DNATed to
//!   an endpoint across the overlay is rerouted into the overlay's smaller MTU, and
//!   both ends learn that from the SYNs instead of from dropped segments.

use super::services::{usable, Endpoint, ServicePort};
use super::NodeContext;
use crate::network::nft::expr::{self, TCP, UDP};
use crate::network::nft::{
    Batch, ChainKind, DynsetOp, Expr, Hook, HookPoint, Message, Netlink, RejectKind, SetKey,
    SetSpec, Verdict, REG32_00, REG_1, REG_VERDICT,
};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The mark bit that asks `nat-postrouting` to masquerade a connection.
pub const MASQUERADE_MARK: u32 = 0x4000;

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const NODEPORT_IPS: &str = "nodeport-ips";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";
const DNS_CHAIN: &str = "cluster-dns";

/// A chain as wanted: a base chain's hook, and its rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// Where a base chain hooks in (none for a regular chain).
    pub hook: Option<Hook>,
    /// The rules, each a list of expressions.
    pub rules: Vec<Vec<Expr>>,
}

/// Everything in skiff's table: chains, sets and maps, and their elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chains by name.
    pub chains: BTreeMap<String, ChainSpec>,
    /// Sets and maps by name. A name always has the same shape.
    pub sets: BTreeMap<String, SetSpec>,
    /// Elements by set: key bytes to the verdict (maps) or nothing (sets).
    pub elements: BTreeMap<String, BTreeMap<Vec<u8>, Option<Verdict>>>,
}

impl Ruleset {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.elements.is_empty()
    }

    fn chain(&mut self, name: impl Into<String>, hook: Option<Hook>, rules: Vec<Vec<Expr>>) {
        self.chains.insert(name.into(), ChainSpec { hook, rules });
    }

    fn set(&mut self, name: impl Into<String>, spec: SetSpec) {
        let name = name.into();
        self.elements.entry(name.clone()).or_default();
        self.sets.insert(name, spec);
    }

    fn element(&mut self, set: &str, key: Vec<u8>, verdict: Option<Verdict>) {
        self.elements
            .entry(set.to_string())
            .or_default()
            .insert(key, verdict);
    }
}

fn vmap(key: SetKey) -> SetSpec {
    SetSpec {
        key,
        verdict_map: true,
        timeout: false,
    }
}

fn rule(parts: impl IntoIterator<Item = Vec<Expr>>) -> Vec<Expr> {
    parts.into_iter().flatten().collect()
}

fn verdict(v: Verdict) -> Vec<Expr> {
    vec![Expr::Verdict(v)]
}

fn lookup_vmap(set: &str, sreg: u32) -> Vec<Expr> {
    vec![Expr::Lookup {
        set: set.to_string(),
        sreg,
        dreg: Some(REG_VERDICT),
        invert: false,
    }]
}

/// Matches traffic to one of this node's addresses (not loopback).
fn to_node_address(ctx: &NodeContext) -> Vec<Expr> {
    if ctx.node_ips.is_empty() {
        rule([
            expr::daddr_is_local(),
            expr::daddr_in(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8), false),
        ])
    } else {
        vec![
            expr::ip_daddr(REG_1),
            Expr::Lookup {
                set: NODEPORT_IPS.to_string(),
                sreg: REG_1,
                dreg: None,
                invert: false,
            },
        ]
    }
}

fn hook(kind: ChainKind, hook: HookPoint, priority: i32) -> Option<Hook> {
    Some(Hook {
        kind,
        hook,
        priority,
    })
}

/// The chains and sets that do not depend on Services.
fn base(ctx: &NodeContext, rs: &mut Ruleset) {
    let cidr = ctx.cluster_cidr;
    rs.set(SERVICE_IPS, vmap(SetKey::Ipv4ProtoPort));
    rs.set(SERVICE_NODEPORTS, vmap(SetKey::ProtoPort));
    rs.set(NO_ENDPOINT_SERVICES, vmap(SetKey::Ipv4ProtoPort));
    rs.set(NO_ENDPOINT_NODEPORTS, vmap(SetKey::ProtoPort));
    if !ctx.node_ips.is_empty() {
        rs.set(
            NODEPORT_IPS,
            SetSpec {
                key: SetKey::Ipv4,
                verdict_map: false,
                timeout: false,
            },
        );
        for ip in &ctx.node_ips {
            rs.element(NODEPORT_IPS, ip.octets().to_vec(), None);
        }
    }

    let jump = |c: &str| verdict(Verdict::Jump(c.to_string()));
    rs.chain(
        "nat-prerouting",
        hook(ChainKind::Nat, HookPoint::Prerouting, -100),
        vec![jump("services")],
    );
    rs.chain(
        "nat-output",
        hook(ChainKind::Nat, HookPoint::Output, -100),
        vec![jump("services")],
    );
    rs.chain(
        "nat-postrouting",
        hook(ChainKind::Nat, HookPoint::Postrouting, 100),
        vec![
            jump("masquerading"),
            // Pods reaching the world leave with the node's address; not traffic to
            // other pods, nor multicast.
            rule([
                expr::saddr_in(cidr, true),
                expr::daddr_in(cidr, false),
                expr::daddr_in(Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4), false),
                vec![Expr::Masquerade],
            ]),
        ],
    );
    rs.chain(
        "masquerading",
        None,
        vec![
            rule([
                expr::mark_has(MASQUERADE_MARK, false),
                verdict(Verdict::Return),
            ]),
            rule([
                expr::mark_set(MASQUERADE_MARK, false),
                vec![Expr::Masquerade],
            ]),
        ],
    );
    rs.chain(
        MARK_FOR_MASQUERADE,
        None,
        vec![expr::mark_set(MASQUERADE_MARK, true)],
    );
    rs.chain(
        "services",
        None,
        vec![
            rule([expr::service_key_load(), lookup_vmap(SERVICE_IPS, REG32_00)]),
            rule([
                to_node_address(ctx),
                expr::port_key_load(),
                lookup_vmap(SERVICE_NODEPORTS, REG32_00),
            ]),
        ],
    );
    rs.chain(
        "endpoints-check",
        None,
        vec![
            rule([
                expr::service_key_load(),
                lookup_vmap(NO_ENDPOINT_SERVICES, REG32_00),
            ]),
            rule([
                to_node_address(ctx),
                expr::port_key_load(),
                lookup_vmap(NO_ENDPOINT_NODEPORTS, REG32_00),
            ]),
        ],
    );
    // As upstream: a connection to a Service without endpoints is refused at once
    // (TCP reset, else ICMP port unreachable), not left to time out.
    rs.chain(
        REJECT_CHAIN,
        None,
        vec![
            rule([
                expr::l4proto_is(TCP),
                vec![Expr::Reject(RejectKind::TcpReset)],
            ]),
            vec![Expr::Reject(RejectKind::Icmp(3))],
        ],
    );
    for (name, point) in [
        ("filter-input", HookPoint::Input),
        ("filter-output", HookPoint::Output),
    ] {
        rs.chain(
            name,
            hook(ChainKind::Filter, point, -10),
            vec![rule([
                expr::ct_state_any(expr::CT_NEW),
                jump("endpoints-check"),
            ])],
        );
    }
    // Hosts whose forward policy drops would otherwise cut the pods off. A packet of a
    // connection already made is accepted before any lookup: only a connection's first
    // packet pays for the endpoints check.
    rs.chain(
        "filter-forward",
        hook(ChainKind::Filter, HookPoint::Forward, -10),
        vec![
            rule([
                expr::ct_state_any(expr::CT_ESTABLISHED | expr::CT_RELATED),
                verdict(Verdict::Accept),
            ]),
            rule([expr::ct_state_any(expr::CT_NEW), jump("endpoints-check")]),
            rule([expr::saddr_in(cidr, true), verdict(Verdict::Accept)]),
            rule([expr::daddr_in(cidr, true), verdict(Verdict::Accept)]),
        ],
    );
    rs.chain(
        "mss-clamp",
        hook(ChainKind::Filter, HookPoint::Postrouting, 0),
        vec![rule([expr::tcp_syn(), expr::clamp_mss_to_route()])],
    );
    if let Some((_, server)) = ctx.dns {
        rs.chain(
            DNS_CHAIN,
            None,
            vec![expr::dnat(*server.ip(), server.port())],
        );
    }
}

fn ep_name(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("{}/{}:{}", sp.id, ep.ip, ep.port)
}

/// The rules that pick one of `eps`: affinity first, then at random.
fn pick_rules(sp: &ServicePort, eps: &[&Endpoint], map: &str, rs: &mut Ruleset) -> Vec<Vec<Expr>> {
    let mut rules = Vec::new();
    if eps.is_empty() {
        rules.push(verdict(Verdict::Drop));
        return rules;
    }
    if sp.affinity.is_some() {
        for ep in eps {
            let n = ep_name(sp, ep);
            rules.push(rule([
                vec![
                    expr::ip_saddr(REG_1),
                    Expr::Lookup {
                        set: format!("aff-{n}"),
                        sreg: REG_1,
                        dreg: None,
                        invert: false,
                    },
                ],
                verdict(Verdict::Goto(format!("ep-{n}"))),
            ]));
        }
    }
    rs.set(map, vmap(SetKey::Index));
    for (i, ep) in eps.iter().enumerate() {
        rs.element(
            map,
            expr::numgen_key(i as u32),
            Some(Verdict::Goto(format!("ep-{}", ep_name(sp, ep)))),
        );
    }
    rules.push(rule([
        vec![Expr::NumgenRandom {
            dreg: REG_1,
            modulus: eps.len() as u32,
        }],
        lookup_vmap(map, REG_1),
    ]));
    rules
}

fn svc_chain(sp: &ServicePort) -> String {
    format!("svc-{}", sp.id)
}

fn ext_chain(sp: &ServicePort) -> String {
    format!("ext-{}", sp.id)
}

fn fw_chain(sp: &ServicePort) -> String {
    format!("fw-{}", sp.id)
}

/// One Service port's entries in the maps every Service shares: its addresses and
/// NodePort to its chains, or to the reject chain when no endpoint takes traffic.
fn service_lookups(sp: &ServicePort, rs: &mut Ruleset) {
    if sp.endpoints.is_empty() {
        let reject = Some(Verdict::Goto(REJECT_CHAIN.to_string()));
        for ip in sp.cluster_ip.iter().chain(&sp.external_ips) {
            rs.element(
                NO_ENDPOINT_SERVICES,
                expr::service_key(*ip, sp.proto, sp.port),
                reject.clone(),
            );
        }
        if let Some(np) = sp.node_port {
            rs.element(NO_ENDPOINT_NODEPORTS, expr::port_key(sp.proto, np), reject);
        }
        return;
    }
    if let Some(ip) = sp.cluster_ip {
        rs.element(
            SERVICE_IPS,
            expr::service_key(ip, sp.proto, sp.port),
            Some(Verdict::Goto(svc_chain(sp))),
        );
    }
    if sp.has_external() {
        let ext = Verdict::Goto(ext_chain(sp));
        let fw = Verdict::Goto(fw_chain(sp));
        for ip in &sp.external_ips {
            let to = if sp.firewalled_ips.contains(ip) {
                &fw
            } else {
                &ext
            };
            rs.element(
                SERVICE_IPS,
                expr::service_key(*ip, sp.proto, sp.port),
                Some(to.clone()),
            );
        }
        if let Some(np) = sp.node_port {
            rs.element(SERVICE_NODEPORTS, expr::port_key(sp.proto, np), Some(ext));
        }
    }
}

/// The chains, sets and elements of one Service port that no other has: its own
/// chains and the maps and sets they pick endpoints and keep affinity with. Nothing
/// for a Service port that no endpoint takes traffic for.
fn service_part(ctx: &NodeContext, sp: &ServicePort) -> Ruleset {
    let mut rs = Ruleset::default();
    if sp.endpoints.is_empty() {
        return rs;
    }
    let svc_chain = svc_chain(sp);
    let ext_chain = ext_chain(sp);
    let local = usable(sp.endpoints.iter().filter(|e| e.local));
    let all = usable(sp.endpoints.iter());
    let cluster_eps = if sp.internal_local { &local } else { &all };

    let mut used: BTreeSet<&Endpoint> = cluster_eps.iter().copied().collect();

    // The cluster address.
    let mut svc_rules = vec![rule([
        expr::saddr_in(ctx.cluster_cidr, false),
        verdict(Verdict::Jump(MARK_FOR_MASQUERADE.to_string())),
    ])];
    svc_rules.extend(pick_rules(
        sp,
        cluster_eps,
        &format!("{svc_chain}-pick"),
        &mut rs,
    ));
    rs.chain(svc_chain.clone(), None, svc_rules);

    // NodePorts and external addresses.
    if sp.has_external() {
        let ext_rules = if sp.external_local {
            used.extend(local.iter().copied());
            // Pods reaching an external address of the cluster take the cluster path.
            let mut r = vec![rule([
                expr::saddr_in(ctx.cluster_cidr, true),
                verdict(Verdict::Goto(svc_chain.clone())),
            ])];
            r.extend(pick_rules(
                sp,
                &local,
                &format!("{ext_chain}-pick"),
                &mut rs,
            ));
            r
        } else {
            vec![
                verdict(Verdict::Jump(MARK_FOR_MASQUERADE.to_string())),
                verdict(Verdict::Goto(svc_chain.clone())),
            ]
        };
        // The load balancer's addresses, for the allowed sources only.
        if !sp.firewalled_ips.is_empty() {
            let mut fw_rules: Vec<Vec<Expr>> = sp
                .allowed_sources
                .iter()
                .map(|net| {
                    rule([
                        expr::saddr_in(*net, true),
                        verdict(Verdict::Goto(ext_chain.clone())),
                    ])
                })
                .collect();
            fw_rules.push(verdict(Verdict::Drop));
            rs.chain(fw_chain(sp), None, fw_rules);
        }
        rs.chain(ext_chain, None, ext_rules);
    }

    // Endpoints.
    for ep in used {
        let n = ep_name(sp, ep);
        let mut rules = vec![rule([
            vec![expr::ip_saddr(REG_1), expr::eq(REG_1, ep.ip.octets())],
            verdict(Verdict::Jump(MARK_FOR_MASQUERADE.to_string())),
        ])];
        if let Some(secs) = sp.affinity {
            let set = format!("aff-{n}");
            rs.set(
                set.clone(),
                SetSpec {
                    key: SetKey::Ipv4,
                    verdict_map: false,
                    timeout: true,
                },
            );
            rules.push(vec![
                expr::ip_saddr(REG_1),
                Expr::Dynset {
                    set,
                    sreg: REG_1,
                    op: DynsetOp::Update,
                    timeout_ms: u64::from(secs) * 1000,
                },
            ]);
        }
        rules.push(expr::dnat(ep.ip, ep.port));
        rs.chain(format!("ep-{n}"), None, rules);
    }
    rs
}

/// The part that holds what every Service shares: the base chains, the maps from
/// addresses and ports to Service chains, and the cluster DNS address.
const SHARED: &str = "";

/// What skiff's table should hold for these Service ports on this node.
pub fn desired(ctx: &NodeContext, ports: &[ServicePort]) -> Parts {
    desired_reusing(ctx, ports, None)
}

/// As [`desired`], but a Service port equal to one of `last` (the ports and the parts
/// of an earlier call) keeps that call's part, the same `Arc`, so that [`plan`] passes
/// over it unread. Only the shared part is built whole each time.
pub fn desired_reusing(
    ctx: &NodeContext,
    ports: &[ServicePort],
    last: Option<(&[ServicePort], &Parts)>,
) -> Parts {
    let before: HashMap<&str, &ServicePort> = last
        .map(|(ports, _)| ports.iter().map(|sp| (sp.id.as_str(), sp)).collect())
        .unwrap_or_default();
    let mut shared = Ruleset::default();
    base(ctx, &mut shared);
    let mut parts = BTreeMap::new();
    for sp in ports {
        service_lookups(sp, &mut shared);
        let kept = match (last, before.get(sp.id.as_str())) {
            (Some((_, parts)), Some(old)) if *old == sp => parts.0.get(&sp.id).cloned(),
            _ => None,
        };
        let part = kept.unwrap_or_else(|| Arc::new(service_part(ctx, sp)));
        if !part.is_empty() {
            parts.insert(sp.id.clone(), part);
        }
    }
    // The cluster DNS address goes to this node's DNS server, whatever Service holds
    // it.
    if let Some((dns_ip, _)) = ctx.dns {
        for proto in [UDP, TCP] {
            let key = expr::service_key(dns_ip, proto, 53);
            if let Some(m) = shared.elements.get_mut(NO_ENDPOINT_SERVICES) {
                m.remove(&key);
            }
            shared.element(SERVICE_IPS, key, Some(Verdict::Goto(DNS_CHAIN.to_string())));
        }
    }
    parts.insert(SHARED.to_string(), Arc::new(shared));
    Parts(parts)
}

/// A whole table as parts by owner, each a [`Ruleset`] of what that owner alone
/// names (the proxy: one part per Service port, one shared); a set's elements may
/// come from several parts. Kept between syncs, an unchanged part is the same `Arc`,
/// and [`plan`] costs what changed rather than the whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts(pub BTreeMap<String, Arc<Ruleset>>);

impl Parts {
    /// A table of one part.
    pub fn single(rs: Ruleset) -> Parts {
        Parts(BTreeMap::from([(String::new(), Arc::new(rs))]))
    }

    /// All the parts as one ruleset, as the kernel's table holds them (what tests
    /// read).
    #[cfg(test)]
    pub fn merged(&self) -> Ruleset {
        let mut all = Ruleset::default();
        for part in self.0.values() {
            all.chains
                .extend(part.chains.iter().map(|(k, v)| (k.clone(), v.clone())));
            all.sets
                .extend(part.sets.iter().map(|(k, v)| (k.clone(), v.clone())));
            for (set, elems) in &part.elements {
                all.elements
                    .entry(set.clone())
                    .or_default()
                    .extend(elems.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        all
    }
}

/// One of skiff's tables as the kernel holds it: a wanted [`Ruleset`] is applied as
/// the batch from the last one applied ([`plan`]; the whole table is replaced the first
/// time), and the table can be removed.
#[derive(Debug)]
pub struct ProgrammedTable<N: Netlink> {
    /// How the table is programmed.
    pub netlink: N,
    table: &'static str,
    /// What the kernel holds, as of the last successful batch; `None` before the first.
    programmed: Option<Parts>,
}

/// A batch the kernel refused; nothing of it was applied.
#[derive(Debug)]
pub struct Refused {
    /// How many messages the batch had.
    pub messages: usize,
    /// Why.
    pub source: crate::network::nft::Error,
}

impl<N: Netlink> ProgrammedTable<N> {
    /// A table nothing has been applied to yet.
    pub fn new(netlink: N, table: &'static str) -> ProgrammedTable<N> {
        ProgrammedTable {
            netlink,
            table,
            programmed: None,
        }
    }

    /// Whether a ruleset has been applied (else the next apply replaces the table).
    pub fn is_programmed(&self) -> bool {
        self.programmed.is_some()
    }

    /// What the kernel holds, as of the last successful apply.
    pub fn programmed(&self) -> Option<&Parts> {
        self.programmed.as_ref()
    }

    /// Makes the table hold `want`; answers how many messages that took.
    pub fn apply(&mut self, want: Parts) -> Result<usize, Refused> {
        let batch = plan(self.table, self.programmed.as_ref(), &want);
        if !batch.is_empty() {
            self.netlink.apply(&batch).map_err(|source| Refused {
                messages: batch.len(),
                source,
            })?;
        }
        self.programmed = Some(want);
        Ok(batch.len())
    }

    /// Whether the table, once applied, has been removed from outside (`nft flush
    /// ruleset`, a firewall's reload). If so, the next apply builds it whole again.
    pub fn lost(&mut self) -> Result<bool, crate::network::nft::Error> {
        if self.programmed.is_none() || self.netlink.table_exists(self.table)? {
            return Ok(false);
        }
        self.programmed = None;
        Ok(true)
    }

    /// Deletes the table; gone already is fine.
    pub fn remove(&mut self) -> Result<(), crate::network::nft::Error> {
        let mut b = Batch::new();
        // Adding first makes the deletion succeed whether or not the table exists.
        b.push(Message::AddTable {
            table: self.table.into(),
        });
        b.push(Message::DeleteTable {
            table: self.table.into(),
        });
        self.netlink.apply(&b)?;
        self.programmed = None;
        Ok(())
    }
}

/// The batch that turns `old` (what is programmed; `None`: unknown, as at start) into
/// `new` in table `table`. With `old` unknown the table is replaced whole: created
/// (so that the deletion cannot fail), deleted and built again, in one batch. A part
/// that is the same `Arc` in both is passed over; the others are compared inside.
///
/// Order matters within the batch: sets and chains are created before rules and
/// elements refer to them; references (elements, rules) are removed before the chains
/// and sets they name. So each part's difference is split into [`Steps`], and the
/// batch is every part's first step, then every part's second, and so on.
pub fn plan(table: &str, old: Option<&Parts>, new: &Parts) -> Batch {
    let none = Parts::default();
    let mut b = Batch::new();
    let old = match old {
        Some(o) => o,
        None => {
            let t = || table.to_string();
            b.push(Message::AddTable { table: t() });
            b.push(Message::DeleteTable { table: t() });
            b.push(Message::AddTable { table: t() });
            &none
        }
    };
    let empty = Ruleset::default();
    let mut steps = Steps::default();
    for (owner, part) in &new.0 {
        match old.0.get(owner) {
            Some(had) if Arc::ptr_eq(had, part) => {}
            had => steps.difference(table, had.map_or(&empty, |h| h), part),
        }
    }
    for (owner, had) in &old.0 {
        if !new.0.contains_key(owner) {
            steps.difference(table, had, &empty);
        }
    }
    for m in steps.0.into_iter().flatten() {
        b.push(m);
    }
    b
}

/// A batch's messages by step, in the order the kernel needs them:
/// 1. new sets, 2. new chains, 3. elements gone or changed (all of a set that goes),
/// 4. changed and gone chains flushed, 5. the rules of new and changed chains,
/// 6. elements new or changed, 7. chains that go, 8. sets that go.
#[derive(Default)]
struct Steps([Vec<Message>; 8]);

impl Steps {
    /// Adds what turns `old` into `new`, two versions of one part.
    fn difference(&mut self, table: &str, old: &Ruleset, new: &Ruleset) {
        let t = || table.to_string();
        let [new_sets, new_chains, gone_elements, flushed, rules, new_elements, gone_chains, gone_sets] =
            &mut self.0;
        for (name, spec) in &new.sets {
            if !old.sets.contains_key(name) {
                new_sets.push(Message::AddSet {
                    table: t(),
                    set: name.clone(),
                    spec: spec.clone(),
                });
            }
        }
        for (name, c) in &new.chains {
            if !old.chains.contains_key(name) {
                new_chains.push(Message::AddChain {
                    table: t(),
                    chain: name.clone(),
                    hook: c.hook,
                });
            }
        }
        let none = BTreeMap::new();
        for (set, elems) in &old.elements {
            let want = new.elements.get(set).unwrap_or(&none);
            // Most sets are unchanged: one pass over both says so, where looking each
            // key up would cost a search per element.
            if want == elems {
                continue;
            }
            let keys: Vec<Vec<u8>> = elems
                .iter()
                .filter(|(k, v)| want.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect();
            if !keys.is_empty() {
                gone_elements.push(Message::DeleteElements {
                    table: t(),
                    set: set.clone(),
                    keys,
                });
            }
        }
        for (name, c) in &old.chains {
            let changed = new.chains.get(name).is_none_or(|n| n.rules != c.rules);
            if changed && !c.rules.is_empty() {
                flushed.push(Message::FlushChain {
                    table: t(),
                    chain: name.clone(),
                });
            }
        }
        for (name, c) in &new.chains {
            let refill = old.chains.get(name).is_none_or(|o| o.rules != c.rules);
            if refill {
                rules.extend(c.rules.iter().map(|r| Message::AddRule {
                    table: t(),
                    chain: name.clone(),
                    exprs: r.clone(),
                }));
            }
        }
        for (set, elems) in &new.elements {
            let had = old.elements.get(set).unwrap_or(&none);
            if had == elems {
                continue;
            }
            let add: Vec<(Vec<u8>, Option<Verdict>)> = elems
                .iter()
                .filter(|(k, v)| had.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !add.is_empty() {
                new_elements.push(Message::AddElements {
                    table: t(),
                    set: set.clone(),
                    elements: add,
                });
            }
        }
        for name in old.chains.keys() {
            if !new.chains.contains_key(name) {
                gone_chains.push(Message::DeleteChain {
                    table: t(),
                    chain: name.clone(),
                });
            }
        }
        for name in old.sets.keys() {
            if !new.sets.contains_key(name) {
                gone_sets.push(Message::DeleteSet {
                    table: t(),
                    set: name.clone(),
                });
            }
        }
    }
}
