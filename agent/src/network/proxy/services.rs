//! From Services and EndpointSlices to what the rules need: one [`ServicePort`] per port
//! of each Service that gets rules, with its endpoints that take traffic.

use super::NodeContext;
use crate::network::nft::conntrack::Stale;
use crate::network::nft::expr::UDP;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation that gave a LoadBalancer's source ranges before the field did.
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// sessionAffinity ClientIP's default timeout (3 hours), as upstream.
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// One port of one Service, with all the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name/protocol/port-name`: names its chains and sets.
    pub id: String,
    /// The layer 4 protocol number.
    pub proto: u8,
    /// The cluster address (none for a Service that only has external addresses).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The Service's port.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<Ipv4Addr>,
    /// The load balancer's addresses among `external_ips` when the Service limits who
    /// reaches them (`spec.loadBalancerSourceRanges`); empty when it does not.
    pub firewalled_ips: Vec<Ipv4Addr>,
    /// The sources allowed to reach `firewalled_ips`: the source ranges and, when a
    /// range holds one of this node's addresses, the load balancer's addresses, which
    /// are the source of the node's own connections to them.
    pub allowed_sources: Vec<Ipv4Net>,
    /// Ready and serving-terminating endpoints, sorted, one per address and port.
    pub endpoints: Vec<Endpoint>,
    /// sessionAffinity ClientIP's timeout in seconds.
    pub affinity: Option<u32>,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
}

/// An endpoint of a [`ServicePort`] that can take traffic: ready, or serving while it
/// terminates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its port (the slice's port of the same name and protocol as the Service's).
    pub port: u16,
    /// On this node.
    pub local: bool,
    /// Ready; if not, it is terminating and still serving, and takes traffic only
    /// while none of the endpoints it is chosen among is ready ([`usable`]).
    pub ready: bool,
}

/// The endpoints among `eps` that traffic goes to: the ready ones or, while none is,
/// those still serving as they terminate, so that connections keep working through a
/// rolling update's last pod or a Local policy's last pod on a node.
pub fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint>) -> Vec<&'a Endpoint> {
    let (ready, terminating): (Vec<&Endpoint>, Vec<&Endpoint>) = eps.partition(|e| e.ready);
    if ready.is_empty() {
        terminating
    } else {
        ready
    }
}

impl ServicePort {
    /// Whether traffic arrives from outside through NodePorts or external addresses.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// The protocol number of a Service or EndpointSlice port's protocol (TCP if unset).
fn proto_number(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// The IPv4 ranges a LoadBalancer Service takes traffic from:
/// `spec.loadBalancerSourceRanges`, else the older annotation, comma-separated; either
/// may be space-padded. Entries that are not IPv4 CIDRs are passed over with a debug
/// log (IPv6 ranges among them: the proxy is IPv4 only).
fn source_ranges(svc: &Service) -> Vec<Ipv4Net> {
    let from_spec: Vec<String> = svc
        .spec
        .iter()
        .flat_map(|s| s.load_balancer_source_ranges.iter().flatten())
        .cloned()
        .collect();
    let listed = if from_spec.is_empty() {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default()
    } else {
        from_spec
    };
    let mut ranges: Vec<Ipv4Net> = listed
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .filter_map(|r| match r.parse::<Ipv4Net>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                tracing::debug!(range = %r, "not an IPv4 source range; passed over");
                None
            }
        })
        .collect();
    ranges.sort();
    ranges.dedup();
    ranges
}

/// The ports of every Service that gets rules: not headless, not ExternalName, with an
/// IPv4 cluster address or external addresses. Malformed values (addresses, ports)
/// are skipped with a debug log: they come from the API.
pub fn service_ports(
    ctx: &NodeContext,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Vec<ServicePort> {
    // Slices by (namespace, service name).
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, svc.as_str())).or_default().push(s);
        }
    }

    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let Some(name) = svc.metadata.name.as_deref() else {
            continue;
        };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            continue;
        }
        let cluster_ip = match spec.cluster_ip.as_deref() {
            None | Some("") | Some("None") => None,
            Some(ip) => match ip.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    tracing::debug!(service = %format!("{ns}/{name}"), %ip, "not an IPv4 cluster address; skipped");
                    None
                }
            },
        };
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let mut lb_ips: Vec<Ipv4Addr> = Vec::new();
        if kind == "LoadBalancer" {
            lb_ips.extend(
                svc.status
                    .iter()
                    .filter_map(|s| s.load_balancer.as_ref())
                    .flat_map(|lb| lb.ingress.iter().flatten())
                    .filter_map(|i| i.ip.as_deref())
                    .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
            );
            lb_ips.sort();
            lb_ips.dedup();
        }
        external_ips.extend(&lb_ips);
        external_ips.sort();
        external_ips.dedup();
        let ranges = source_ranges(svc);
        let (firewalled_ips, allowed_sources) = if ranges.is_empty() || lb_ips.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let mut allowed = ranges.clone();
            if ranges
                .iter()
                .any(|r| ctx.node_ips.iter().any(|ip| r.contains(ip)))
            {
                allowed.extend(lb_ips.iter().map(|ip| Ipv4Net::from(*ip)));
            }
            (lb_ips, allowed)
        };
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if headless || (cluster_ip.is_none() && external_ips.is_empty()) {
            continue;
        }
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let svc_slices = by_service.get(&(ns, name));

        for p in spec.ports.iter().flatten() {
            let Some(proto) = proto_number(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.as_deref().unwrap_or("");
            let node_port = if kind == "NodePort" || kind == "LoadBalancer" {
                p.node_port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0)
            } else {
                None
            };
            // By address and port: whether on this node, whether ready.
            let mut endpoints: BTreeMap<(Ipv4Addr, u16), (bool, bool)> = BTreeMap::new();
            for slice in svc_slices.into_iter().flatten() {
                let Some(target) = slice.ports.iter().flatten().find_map(|sp| {
                    (sp.name.as_deref().unwrap_or("") == port_name
                        && proto_number(sp.protocol.as_deref()) == Some(proto))
                    .then_some(sp.port)
                    .flatten()
                    .and_then(|p| u16::try_from(p).ok())
                }) else {
                    continue;
                };
                for ep in slice.endpoints.iter().flatten() {
                    // Unset, ready and serving count as true, terminating as false.
                    let c = ep.conditions.as_ref();
                    let ready = c.and_then(|c| c.ready).unwrap_or(true);
                    let serving = c.and_then(|c| c.serving).unwrap_or(true);
                    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                    let takes_traffic = ready || (serving && terminating);
                    if !takes_traffic {
                        continue;
                    }
                    let local = ep.node_name.as_deref() == Some(ctx.node_name.as_str());
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse::<Ipv4Addr>() {
                            let e = endpoints.entry((ip, target)).or_insert((local, ready));
                            *e = (e.0 || local, e.1 || ready);
                        }
                    }
                }
            }
            let proto_name = match proto {
                6 => "tcp",
                17 => "udp",
                _ => "sctp",
            };
            out.push(ServicePort {
                id: format!("{ns}/{name}/{proto_name}/{port_name}"),
                proto,
                cluster_ip,
                port,
                node_port,
                external_ips: external_ips.clone(),
                firewalled_ips: firewalled_ips.clone(),
                allowed_sources: allowed_sources.clone(),
                endpoints: endpoints
                    .into_iter()
                    .map(|((ip, port), (local, ready))| Endpoint {
                        ip,
                        port,
                        local,
                        ready,
                    })
                    .collect(),
                affinity,
                external_local,
                internal_local,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    out
}

/// The UDP flows conntrack holds that `new` leaves stale after `old` (UDP flows do not
/// end, so they would keep their old DNAT): those DNATed to an endpoint no UDP Service
/// port has any more, and those sent to a Service port that had no endpoint and now
/// has (they went unanswered, without a DNAT). A NodePort's flows are those to the
/// node's addresses, or to the port on any address when the node's are not known.
pub fn stale_udp(ctx: &NodeContext, old: &[ServicePort], new: &[ServicePort]) -> Vec<Stale> {
    let udp = |p: &&ServicePort| p.proto == UDP;
    let now: BTreeSet<SocketAddrV4> = new
        .iter()
        .filter(udp)
        .flat_map(|p| p.endpoints.iter().map(|e| SocketAddrV4::new(e.ip, e.port)))
        .collect();
    let had_endpoints: BTreeSet<&str> = old
        .iter()
        .filter(udp)
        .filter(|p| !p.endpoints.is_empty())
        .map(|p| p.id.as_str())
        .collect();
    let mut out = BTreeSet::new();
    for p in old.iter().filter(udp) {
        for e in &p.endpoints {
            let a = SocketAddrV4::new(e.ip, e.port);
            if !now.contains(&a) {
                out.insert(Stale::ToEndpoint(a));
            }
        }
    }
    for p in new.iter().filter(udp) {
        if p.endpoints.is_empty() || had_endpoints.contains(p.id.as_str()) {
            continue;
        }
        for ip in p.cluster_ip.iter().chain(&p.external_ips) {
            out.insert(Stale::ToService(SocketAddrV4::new(*ip, p.port)));
        }
        if let Some(np) = p.node_port {
            if ctx.node_ips.is_empty() {
                out.insert(Stale::ToNodePort(np));
            }
            for ip in &ctx.node_ips {
                out.insert(Stale::ToService(SocketAddrV4::new(*ip, np)));
            }
        }
    }
    out.into_iter().collect()
}

/// The UDP flows to forget at a start, when nothing is known of what the flows were
/// made with: those sent to a UDP Service port (its addresses, its NodePort) whose
/// replies come from none of its endpoints now. The cluster DNS address's one
/// endpoint is this node's DNS server. A NodePort is taken as in [`stale_udp`].
pub fn stale_udp_at_start(ctx: &NodeContext, ports: &[ServicePort]) -> Vec<Stale> {
    let mut out = BTreeSet::new();
    for p in ports.iter().filter(|p| p.proto == UDP) {
        let endpoints: Vec<SocketAddrV4> = p
            .endpoints
            .iter()
            .map(|e| SocketAddrV4::new(e.ip, e.port))
            .collect();
        for ip in p.cluster_ip.iter().chain(&p.external_ips) {
            let service = SocketAddrV4::new(*ip, p.port);
            let endpoints = match ctx.dns {
                Some((dns_ip, server)) if service == SocketAddrV4::new(dns_ip, 53) => {
                    vec![server]
                }
                _ => endpoints.clone(),
            };
            out.insert(Stale::NotFrom { service, endpoints });
        }
        if let Some(port) = p.node_port {
            if ctx.node_ips.is_empty() {
                out.insert(Stale::NodePortNotFrom {
                    port,
                    endpoints: endpoints.clone(),
                });
            }
            for ip in &ctx.node_ips {
                out.insert(Stale::NotFrom {
                    service: SocketAddrV4::new(*ip, port),
                    endpoints: endpoints.clone(),
                });
            }
        }
    }
    out.into_iter().collect()
}
