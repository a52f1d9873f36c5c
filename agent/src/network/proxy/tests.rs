//! The proxy's decisions with plain values and the recording fake.

use super::ruleset::MASQUERADE_MARK;
use super::*;
use crate::network::nft::{Expr, Message, Recorder, Verdict};
use serde_json::json;

/// A Service to build, with the test defaults: ClusterIP, TCP, port name `http`.
#[derive(Clone)]
pub(super) struct Svc {
    pub name: &'static str,
    pub cluster_ip: &'static str,
    pub port: i32,
    pub protocol: &'static str,
    pub node_port: Option<i32>,
    pub lb_ip: Option<&'static str>,
    pub external_ip: Option<&'static str>,
    pub external_local: bool,
    pub internal_local: bool,
    pub affinity: Option<i32>,
}

impl Svc {
    pub fn cluster(name: &'static str, cluster_ip: &'static str, port: i32) -> Svc {
        Svc {
            name,
            cluster_ip,
            port,
            protocol: "TCP",
            node_port: None,
            lb_ip: None,
            external_ip: None,
            external_local: false,
            internal_local: false,
            affinity: None,
        }
    }
}

pub(super) fn service(s: Svc) -> Arc<Service> {
    let kind = if s.lb_ip.is_some() {
        "LoadBalancer"
    } else if s.node_port.is_some() {
        "NodePort"
    } else {
        "ClusterIP"
    };
    let mut port =
        json!({"name": "http", "port": s.port, "protocol": s.protocol, "targetPort": "http"});
    if let Some(np) = s.node_port {
        port["nodePort"] = json!(np);
    }
    let mut spec = json!({
        "type": kind,
        "clusterIP": s.cluster_ip,
        "ports": [port],
        "externalTrafficPolicy": if s.external_local { "Local" } else { "Cluster" },
        "internalTrafficPolicy": if s.internal_local { "Local" } else { "Cluster" },
    });
    if let Some(ip) = s.external_ip {
        spec["externalIPs"] = json!([ip]);
    }
    if let Some(t) = s.affinity {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": t}});
    }
    let mut v = json!({
        "metadata": {"name": s.name, "namespace": "default"},
        "spec": spec,
    });
    if let Some(ip) = s.lb_ip {
        v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    Arc::new(serde_json::from_value(v).expect("a valid Service"))
}

/// A slice of Service `svc` with endpoints (address, node, ready) on `port`, named
/// `http` for TCP and UDP.
pub(super) fn slice(svc: &str, eps: &[(&str, &str, bool)], port: i32) -> Arc<EndpointSlice> {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node, ready)| {
            json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}})
        })
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("{svc}-abcde"),
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": svc},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [
                {"name": "http", "port": port, "protocol": "TCP"},
                {"name": "http", "port": port, "protocol": "UDP"},
            ],
        }))
        .expect("a valid EndpointSlice"),
    )
}

fn ctx() -> NodeContext {
    NodeContext {
        node_name: "n1".into(),
        node_ips: vec![],
        cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
        service_cidr: "10.43.0.0/16".parse().expect("cidr"),
        bridge: "skiff0".into(),
        dns: None,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

/// The names a message touches (chain or set).
fn target(m: &Message) -> &str {
    match m {
        Message::AddTable { table } | Message::DeleteTable { table } => table,
        Message::AddChain { chain, .. }
        | Message::FlushChain { chain, .. }
        | Message::DeleteChain { chain, .. }
        | Message::AddRule { chain, .. } => chain,
        Message::AddSet { set, .. }
        | Message::DeleteSet { set, .. }
        | Message::AddElements { set, .. }
        | Message::DeleteElements { set, .. } => set,
    }
}

#[test]
fn service_ports_take_ready_endpoints_by_port_name_and_skip_what_gets_no_rules() {
    let web = service(Svc {
        affinity: Some(0),
        ..Svc::cluster("web", "10.43.0.20", 80)
    });
    let headless = service(Svc::cluster("headless", "None", 80));
    let external_name: Arc<Service> = Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"},
        }))
        .expect("service"),
    );
    let mut s = (*slice(
        "web",
        &[
            ("10.42.0.5", "n1", true),
            ("10.42.1.5", "n2", false),
            ("10.42.0.5", "n1", true),
        ],
        8080,
    ))
    .clone();
    // No conditions at all counts as ready.
    if let Some(eps) = s.endpoints.as_mut() {
        eps.push(serde_json::from_value(json!({"addresses": ["10.42.2.5"]})).expect("endpoint"));
    }
    // A slice port of another name is not this Service port's.
    let other = (*slice("web", &[("10.42.9.9", "n1", true)], 9999)).clone();
    let mut other = other;
    if let Some(ps) = other.ports.as_mut() {
        for p in ps {
            p.name = Some("metrics".into());
        }
    }
    let ports = service_ports(
        &ctx(),
        &[web, headless, external_name],
        &[Arc::new(s), Arc::new(other)],
    );
    assert_eq!(ports.len(), 1);
    let p = &ports[0];
    assert_eq!(p.id, "default/web/tcp/http");
    assert_eq!(p.cluster_ip, Some(ip("10.43.0.20")));
    assert_eq!(p.affinity, Some(10_800), "timeout 0 takes the default");
    assert_eq!(
        p.endpoints,
        vec![
            Endpoint {
                ip: ip("10.42.0.5"),
                port: 8080,
                local: true,
                ready: true,
            },
            Endpoint {
                ip: ip("10.42.2.5"),
                port: 8080,
                local: false,
                ready: true,
            },
        ]
    );
}

/// Service `svc`'s slice on port 8080 whose endpoints (address, node) carry the given
/// conditions.
fn slice_with(svc: &str, eps: &[(&str, &str, serde_json::Value)]) -> Arc<EndpointSlice> {
    let mut s = (*slice(svc, &[], 8080)).clone();
    s.endpoints = Some(
        eps.iter()
            .map(|(ip, node, conditions)| {
                serde_json::from_value(
                    json!({"addresses": [ip], "nodeName": node, "conditions": conditions}),
                )
                .expect("endpoint")
            })
            .collect(),
    );
    Arc::new(s)
}

fn terminating() -> serde_json::Value {
    json!({"ready": false, "serving": true, "terminating": true})
}

#[test]
fn terminating_endpoints_still_serving_take_traffic_only_while_none_is_ready() {
    let web = service(Svc {
        node_port: Some(30080),
        external_local: true,
        ..Svc::cluster("web", "10.43.0.20", 80)
    });
    let ready = json!({"ready": true, "serving": true, "terminating": false});
    let gone = json!({"ready": false, "serving": false, "terminating": true});
    let ports = service_ports(
        &ctx(),
        std::slice::from_ref(&web),
        &[slice_with(
            "web",
            &[
                ("10.42.1.5", "n2", ready.clone()),
                ("10.42.0.6", "n1", terminating()),
                ("10.42.0.7", "n1", gone),
            ],
        )],
    );
    let eps: Vec<(String, bool)> = ports[0]
        .endpoints
        .iter()
        .map(|e| (e.ip.to_string(), e.ready))
        .collect();
    assert_eq!(
        eps,
        [
            ("10.42.0.6".to_string(), false),
            ("10.42.1.5".to_string(), true)
        ],
        "the one no longer serving is left out"
    );
    // The cluster path picks the ready endpoint alone; the Local external path has
    // no ready endpoint on this node and falls back to the terminating one here.
    let rs = desired(&ctx(), &ports).merged();
    let picks = |map: &str| picks_of(&rs, map);
    let goto = |ep: &str| Some(Verdict::Goto(format!("ep-default/web/tcp/http/{ep}:8080")));
    assert_eq!(picks("svc-default/web/tcp/http-pick"), [goto("10.42.1.5")]);
    assert_eq!(picks("ext-default/web/tcp/http-pick"), [goto("10.42.0.6")]);

    // Only terminating endpoints: they take the traffic, and nothing is rejected.
    let ports = service_ports(
        &ctx(),
        &[web],
        &[slice_with("web", &[("10.42.1.8", "n2", terminating())])],
    );
    let rs = desired(&ctx(), &ports).merged();
    assert_eq!(
        picks_of(&rs, "svc-default/web/tcp/http-pick"),
        [goto("10.42.1.8")]
    );
    assert!(rs.elements["no-endpoint-services"].is_empty());
    assert!(rs.elements["no-endpoint-nodeports"].is_empty());
}

fn picks_of(rs: &Ruleset, map: &str) -> Vec<Option<Verdict>> {
    rs.elements[map].values().cloned().collect()
}

#[test]
fn an_address_in_two_slices_is_one_endpoint_ready_if_either_says_so() {
    let web = service(Svc::cluster("web", "10.43.0.20", 80));
    let ports = service_ports(
        &ctx(),
        &[web],
        &[
            slice_with("web", &[("10.42.0.6", "n1", terminating())]),
            slice("web", &[("10.42.0.6", "n1", true)], 8080),
        ],
    );
    assert_eq!(
        ports[0].endpoints,
        [Endpoint {
            ip: ip("10.42.0.6"),
            port: 8080,
            local: true,
            ready: true,
        }]
    );
}

#[test]
fn source_ranges_let_only_their_sources_reach_the_load_balancers_addresses() {
    let lb = |ranges: Option<&[&str]>, annotation: Option<&str>| {
        let mut svc = (*service(Svc {
            node_port: Some(30080),
            lb_ip: Some("192.168.1.10"),
            external_ip: Some("198.51.100.9"),
            ..Svc::cluster("web", "10.43.0.20", 80)
        }))
        .clone();
        if let Some(spec) = svc.spec.as_mut() {
            spec.load_balancer_source_ranges =
                ranges.map(|r| r.iter().map(|s| s.to_string()).collect());
        }
        if let Some(a) = annotation {
            svc.metadata.annotations = Some(
                [(
                    "service.beta.kubernetes.io/load-balancer-source-ranges".to_string(),
                    a.to_string(),
                )]
                .into(),
            );
        }
        Arc::new(svc)
    };
    let eps = slice("web", &[("10.42.0.5", "n1", true)], 8080);
    let node = NodeContext {
        node_ips: vec![ip("192.168.1.10")],
        ..ctx()
    };
    let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
    let fw = Some(Verdict::Goto("fw-default/web/tcp/http".into()));
    let ext = Some(Verdict::Goto("ext-default/web/tcp/http".into()));
    let key = |a: &str| nft::expr::service_key(ip(a), 6, 80);

    // The load balancer's address goes through the firewall chain; the Service's
    // external address and NodePort do not. Entries that are not IPv4 ranges are
    // passed over, and a host bit is masked off.
    let ports = service_ports(
        &node,
        &[lb(
            Some(&[" 203.0.113.7/24 ", "2001:db8::/32", "bogus"]),
            None,
        )],
        std::slice::from_ref(&eps),
    );
    assert_eq!(ports[0].firewalled_ips, [ip("192.168.1.10")]);
    assert_eq!(ports[0].allowed_sources, [net("203.0.113.0/24")]);
    let rs = desired(&node, &ports).merged();
    assert_eq!(
        rs.elements["service-ips"].get(&key("192.168.1.10")),
        Some(&fw)
    );
    assert_eq!(
        rs.elements["service-ips"].get(&key("198.51.100.9")),
        Some(&ext)
    );
    assert_eq!(
        rs.elements["service-nodeports"].get(&nft::expr::port_key(6, 30080)),
        Some(&ext)
    );
    assert_eq!(
        rs.chains["fw-default/web/tcp/http"].rules,
        [
            rule([
                nft::expr::saddr_in(net("203.0.113.0/24"), true),
                vec![Expr::Verdict(Verdict::Goto(
                    "ext-default/web/tcp/http".into()
                ))],
            ]),
            vec![Expr::Verdict(Verdict::Drop)],
        ]
    );

    // The annotation when the field is empty; a range holding the node's address
    // lets the node's own connections in, whose source is the load balancer's address.
    let ports = service_ports(
        &node,
        &[lb(None, Some("192.168.0.0/16, 10.0.0.0/8"))],
        std::slice::from_ref(&eps),
    );
    assert_eq!(
        ports[0].allowed_sources,
        [
            net("10.0.0.0/8"),
            net("192.168.0.0/16"),
            net("192.168.1.10/32")
        ]
    );

    // No ranges: no firewall.
    let ports = service_ports(&node, &[lb(None, None)], &[eps]);
    assert!(ports[0].firewalled_ips.is_empty());
    let rs = desired(&node, &ports).merged();
    assert_eq!(
        rs.elements["service-ips"].get(&key("192.168.1.10")),
        Some(&ext)
    );
    assert!(!rs.chains.contains_key("fw-default/web/tcp/http"));
}

fn rule(parts: impl IntoIterator<Item = Vec<Expr>>) -> Vec<Expr> {
    parts.into_iter().flatten().collect()
}

#[test]
fn load_balancer_ingress_and_external_ips_are_external_addresses() {
    let lb = service(Svc {
        node_port: Some(30080),
        lb_ip: Some("192.0.2.10"),
        external_ip: Some("192.0.2.11"),
        ..Svc::cluster("lb", "10.43.0.21", 443)
    });
    let ports = service_ports(&ctx(), &[lb], &[]);
    assert_eq!(
        ports[0].external_ips,
        vec![ip("192.0.2.10"), ip("192.0.2.11")]
    );
    assert_eq!(ports[0].node_port, Some(30080));
}

#[test]
fn the_first_sync_replaces_the_table_and_a_repeat_sends_nothing() {
    let svc = service(Svc::cluster("web", "10.43.0.20", 80));
    let sl = slice("web", &[("10.42.0.5", "n1", true)], 8080);
    let mut p = Proxy::new(Recorder::default(), ctx());
    let stats = p
        .sync(std::slice::from_ref(&svc), std::slice::from_ref(&sl))
        .expect("sync");
    assert!(stats.full);
    let b = &p.netlink().batches[0];
    assert_eq!(
        &b.messages[..3],
        &[
            Message::AddTable {
                table: TABLE.into()
            },
            Message::DeleteTable {
                table: TABLE.into()
            },
            Message::AddTable {
                table: TABLE.into()
            },
        ]
    );
    // The Service's address maps to its chain, which DNATs through its endpoint.
    assert!(b.messages.iter().any(|m| matches!(m,
        Message::AddElements { set, elements, .. } if set == "service-ips"
            && elements.contains(&(
                nft::expr::service_key(ip("10.43.0.20"), 6, 80),
                Some(Verdict::Goto("svc-default/web/tcp/http".into())),
            ))
    )));
    assert!(b.messages.iter().any(|m| matches!(m,
        Message::AddRule { chain, exprs, .. } if chain == "ep-default/web/tcp/http/10.42.0.5:8080"
            && exprs.ends_with(&nft::expr::dnat(ip("10.42.0.5"), 8080))
    )));

    let stats = p.sync(&[svc], &[sl]).expect("sync");
    assert_eq!(stats.messages, 0);
    assert!(!stats.full);
    assert_eq!(p.netlink().batches.len(), 1, "nothing sent");
}

#[test]
fn an_endpoint_change_touches_only_that_services_chains_and_elements() {
    let a = service(Svc::cluster("a", "10.43.0.20", 80));
    let b = service(Svc::cluster("b", "10.43.0.21", 80));
    let sa = slice("a", &[("10.42.0.5", "n1", true)], 8080);
    let sb1 = slice("b", &[("10.42.0.6", "n1", true)], 8080);
    let sb2 = slice(
        "b",
        &[("10.42.0.6", "n1", true), ("10.42.0.7", "n2", true)],
        8080,
    );
    let mut p = Proxy::new(Recorder::default(), ctx());
    p.sync(&[a.clone(), b.clone()], &[sa.clone(), sb1])
        .expect("sync");
    p.sync(&[a, b], &[sa, sb2]).expect("sync");
    let batch = &p.netlink().batches[1];
    assert!(!batch.is_empty());
    for m in &batch.messages {
        assert!(target(m).contains("default/b/"), "only b's objects: {m}");
        assert!(!matches!(
            m,
            Message::AddTable { .. } | Message::DeleteTable { .. }
        ));
    }
    // The pick map gains the new endpoint; the service chain is refilled with mod 2.
    assert!(batch.messages.iter().any(|m| matches!(m,
        Message::AddRule { chain, exprs, .. } if chain == "svc-default/b/tcp/http"
            && exprs.contains(&Expr::NumgenRandom { dreg: nft::REG_1, modulus: 2 })
    )));
    assert!(batch.messages.iter().any(|m| matches!(m,
        Message::AddChain { chain, .. } if chain == "ep-default/b/tcp/http/10.42.0.7:8080"
    )));
}

#[test]
fn a_deleted_service_loses_references_before_its_chains_and_sets() {
    let a = service(Svc {
        affinity: Some(30),
        ..Svc::cluster("a", "10.43.0.20", 80)
    });
    let sa = slice("a", &[("10.42.0.5", "n1", true)], 8080);
    let mut p = Proxy::new(Recorder::default(), ctx());
    p.sync(&[a], std::slice::from_ref(&sa)).expect("sync");
    p.sync(&[], &[sa]).expect("sync");
    let m = &p.netlink().batches[1].messages;
    let pos = |f: &dyn Fn(&Message) -> bool| m.iter().position(f).expect("message present");
    let del_elem =
        pos(&|m| matches!(m, Message::DeleteElements { set, .. } if set == "service-ips"));
    let flush = pos(
        &|m| matches!(m, Message::FlushChain { chain, .. } if chain == "svc-default/a/tcp/http"),
    );
    let del_chain = pos(
        &|m| matches!(m, Message::DeleteChain { chain, .. } if chain == "ep-default/a/tcp/http/10.42.0.5:8080"),
    );
    let del_set = pos(
        &|m| matches!(m, Message::DeleteSet { set, .. } if set == "aff-default/a/tcp/http/10.42.0.5:8080"),
    );
    assert!(del_elem < flush && flush < del_chain && del_chain < del_set);
}

#[test]
fn unchanged_service_ports_keep_their_parts_and_the_table_is_the_same_as_built_whole() {
    let svcs = |names: &[&'static str]| -> Vec<Arc<Service>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                service(Svc {
                    affinity: (i % 2 == 0).then_some(30),
                    ..Svc::cluster(
                        n,
                        ["10.43.0.20", "10.43.0.21", "10.43.0.22", "10.43.0.23"][i],
                        80,
                    )
                })
            })
            .collect()
    };
    let before = service_ports(
        &ctx(),
        &svcs(&["a", "b", "c"]),
        &[
            slice("a", &[("10.42.0.5", "n1", true)], 8080),
            slice("b", &[("10.42.0.6", "n1", true)], 8080),
            slice("c", &[("10.42.0.7", "n2", true)], 8080),
        ],
    );
    // b gains an endpoint, c loses its last, d is new; a is as it was.
    let after = service_ports(
        &ctx(),
        &svcs(&["a", "b", "c", "d"]),
        &[
            slice("a", &[("10.42.0.5", "n1", true)], 8080),
            slice(
                "b",
                &[("10.42.0.6", "n1", true), ("10.42.1.6", "n2", true)],
                8080,
            ),
            slice("d", &[("10.42.0.8", "n1", true)], 8080),
        ],
    );
    let first = desired(&ctx(), &before);
    let kept = desired_reusing(&ctx(), &after, Some((&before, &first)));
    let whole = desired(&ctx(), &after);
    assert_eq!(kept, whole, "the same table, part for part");
    let part = |p: &Parts, id: &str| p.0.get(id).cloned();
    let same = |id: &str| match (part(&first, id), part(&kept, id)) {
        (Some(x), Some(y)) => Arc::ptr_eq(&x, &y),
        _ => false,
    };
    assert!(same("default/a/tcp/http"));
    assert!(!same("default/b/tcp/http"));
    assert!(
        part(&kept, "default/c/tcp/http").is_none(),
        "no chains without endpoints"
    );

    // The batch from the kept parts is the batch from the whole tables compared as one.
    let by_parts = plan(TABLE, Some(&first), &kept);
    let as_one = plan(
        TABLE,
        Some(&Parts::single(first.merged())),
        &Parts::single(whole.merged()),
    );
    let sorted = |b: &nft::Batch| {
        let mut m: Vec<String> = b.messages.iter().map(|m| format!("{m:?}")).collect();
        m.sort();
        m
    };
    assert_eq!(sorted(&by_parts), sorted(&as_one));
    assert!(!by_parts.is_empty());
    for m in &by_parts.messages {
        assert!(!target(m).contains("default/a/"), "nothing of a: {m}");
    }
}

#[test]
fn a_service_without_ready_endpoints_is_rejected_not_balanced() {
    let a = service(Svc {
        node_port: Some(30000),
        ..Svc::cluster("a", "10.43.0.20", 80)
    });
    let sa = slice("a", &[("10.42.0.5", "n1", false)], 8080);
    let ports = service_ports(&ctx(), &[a], &[sa]);
    let rs = desired(&ctx(), &ports).merged();
    let reject = Some(Verdict::Goto("reject-chain".into()));
    assert_eq!(
        rs.elements["no-endpoint-services"].get(&nft::expr::service_key(ip("10.43.0.20"), 6, 80)),
        Some(&reject)
    );
    assert_eq!(
        rs.elements["no-endpoint-nodeports"].get(&nft::expr::port_key(6, 30000)),
        Some(&reject)
    );
    assert!(!rs.chains.keys().any(|c| c.contains("default/a/")));
    assert!(rs.elements["service-ips"].is_empty());
}

#[test]
fn local_traffic_policies_use_only_this_nodes_endpoints() {
    let a = service(Svc {
        node_port: Some(30000),
        external_local: true,
        internal_local: true,
        ..Svc::cluster("a", "10.43.0.20", 80)
    });
    // Ready endpoints, none on this node: drop (not reject), and no masquerade mark
    // in the external chain.
    let sa = slice("a", &[("10.42.1.5", "n2", true)], 8080);
    let rs = desired(
        &ctx(),
        &service_ports(&ctx(), std::slice::from_ref(&a), &[sa]),
    )
    .merged();
    let ext = &rs.chains["ext-default/a/tcp/http"].rules;
    assert_eq!(ext.last(), Some(&vec![Expr::Verdict(Verdict::Drop)]));
    assert!(!ext
        .iter()
        .flatten()
        .any(|e| matches!(e, Expr::Verdict(Verdict::Jump(c)) if c == "mark-for-masquerade")));
    let svc = &rs.chains["svc-default/a/tcp/http"].rules;
    assert_eq!(svc.last(), Some(&vec![Expr::Verdict(Verdict::Drop)]));
    assert!(!rs
        .chains
        .contains_key("ep-default/a/tcp/http/10.42.1.5:8080"));

    // One local endpoint: both pick it alone.
    let sa = slice(
        "a",
        &[("10.42.1.5", "n2", true), ("10.42.0.5", "n1", true)],
        8080,
    );
    let rs = desired(&ctx(), &service_ports(&ctx(), &[a], &[sa])).merged();
    for map in ["svc-default/a/tcp/http-pick", "ext-default/a/tcp/http-pick"] {
        assert_eq!(rs.elements[map].len(), 1, "{map}");
    }
}

#[test]
fn the_cluster_dns_address_goes_to_this_nodes_dns_server() {
    let dns = service(Svc {
        protocol: "UDP",
        ..Svc::cluster("kube-dns", "10.43.0.10", 53)
    });
    let mut c = ctx();
    c.dns = Some((ip("10.43.0.10"), "10.42.0.1:53".parse().expect("addr")));
    // Without endpoints the Service would be rejected; the DNS override wins.
    let rs = desired(&c, &service_ports(&c, &[dns], &[])).merged();
    for proto in [6, 17] {
        let key = nft::expr::service_key(ip("10.43.0.10"), proto, 53);
        assert_eq!(
            rs.elements["service-ips"].get(&key),
            Some(&Some(Verdict::Goto("cluster-dns".into())))
        );
        assert!(!rs.elements["no-endpoint-services"].contains_key(&key));
    }
    assert_eq!(
        rs.chains["cluster-dns"].rules,
        vec![nft::expr::dnat(ip("10.42.0.1"), 53)]
    );
}

#[test]
fn masquerade_marks_outside_traffic_and_hairpins() {
    let a = service(Svc::cluster("a", "10.43.0.20", 80));
    let sa = slice("a", &[("10.42.0.5", "n1", true)], 8080);
    let rs = desired(&ctx(), &service_ports(&ctx(), &[a], &[sa])).merged();
    let jump_mark = Expr::Verdict(Verdict::Jump("mark-for-masquerade".into()));
    let svc = &rs.chains["svc-default/a/tcp/http"].rules;
    assert!(svc[0].ends_with(std::slice::from_ref(&jump_mark)));
    assert!(svc[0].contains(&nft::expr::neq(nft::REG_1, [10, 42, 0, 0])));
    let ep = &rs.chains["ep-default/a/tcp/http/10.42.0.5:8080"].rules;
    assert_eq!(
        ep[0],
        vec![
            nft::expr::ip_saddr(nft::REG_1),
            nft::expr::eq(nft::REG_1, [10, 42, 0, 5]),
            jump_mark
        ]
    );
    assert_eq!(
        rs.chains["mark-for-masquerade"].rules,
        vec![nft::expr::mark_set(MASQUERADE_MARK, true)]
    );
}

#[test]
fn a_failed_batch_is_sent_again_by_the_next_sync() {
    let a = service(Svc::cluster("a", "10.43.0.20", 80));
    let s1 = slice("a", &[("10.42.0.5", "n1", true)], 8080);
    let s2 = slice("a", &[("10.42.0.6", "n1", true)], 8080);
    let mut p = Proxy::new(Recorder::default(), ctx());
    p.sync(std::slice::from_ref(&a), &[s1]).expect("sync");
    p.netlink().fail_next = Some("kernel said no".into());
    let err = p
        .sync(std::slice::from_ref(&a), std::slice::from_ref(&s2))
        .expect_err("injected");
    assert!(matches!(err, Error::Apply { .. }));
    p.sync(&[a], &[s2]).expect("sync");
    let b = &p.netlink().batches;
    assert_eq!(b[1], b[2]);
}

#[test]
fn remove_deletes_the_table_even_if_absent() {
    let mut p = Proxy::new(Recorder::default(), ctx());
    p.remove().expect("remove");
    assert_eq!(
        p.netlink().batches[0].messages,
        vec![
            Message::AddTable {
                table: TABLE.into()
            },
            Message::DeleteTable {
                table: TABLE.into()
            },
        ]
    );
}

#[test]
fn a_change_forgets_the_udp_flows_it_leaves_stale() {
    use crate::network::nft::conntrack::Stale;
    let udp = |np: Option<i32>| {
        service(Svc {
            protocol: "UDP",
            node_port: np,
            ..Svc::cluster("dns", "10.43.0.53", 53)
        })
    };
    let tcp = service(Svc::cluster("web", "10.43.0.20", 80));
    let one = slice("dns", &[("10.42.0.5", "n1", true)], 5353);
    let other = slice("dns", &[("10.42.0.6", "n1", true)], 5353);
    let web = slice("web", &[("10.42.0.5", "n1", true)], 5353);
    let mut p = Proxy::new(Recorder::default(), ctx());

    // The first sync knows nothing of what the flows were made with: what its
    // endpoints do not answer goes.
    p.sync(&[udp(None), tcp.clone()], &[one.clone(), web.clone()])
        .expect("sync");
    assert_eq!(
        p.netlink().forgotten,
        vec![vec![Stale::NotFrom {
            service: "10.43.0.53:53".parse().unwrap(),
            endpoints: vec!["10.42.0.5:5353".parse().unwrap()],
        }]]
    );
    p.netlink().forgotten.clear();
    // The endpoint moves: the flows DNATed to the old one go. The TCP Service on the
    // same address and port does not count.
    p.sync(&[udp(None), tcp.clone()], &[other.clone(), web.clone()])
        .expect("sync");
    assert_eq!(
        p.netlink().forgotten,
        vec![vec![Stale::ToEndpoint("10.42.0.5:5353".parse().unwrap())]]
    );
    // No endpoint, then one again: what was sent meanwhile went unanswered and goes,
    // at the cluster address and the NodePort.
    p.sync(&[udp(Some(30053)), tcp.clone()], std::slice::from_ref(&web))
        .expect("sync");
    p.sync(&[udp(Some(30053)), tcp], &[one, web]).expect("sync");
    assert_eq!(
        p.netlink().forgotten[1..],
        [
            vec![Stale::ToEndpoint("10.42.0.6:5353".parse().unwrap())],
            vec![
                Stale::ToService("10.43.0.53:53".parse().unwrap()),
                Stale::ToNodePort(30053),
            ],
        ]
    );
}

#[test]
fn a_nodeport_that_gains_endpoints_forgets_flows_to_the_nodes_addresses_only() {
    use crate::network::nft::conntrack::Stale;
    let known = NodeContext {
        node_ips: vec![ip("192.168.1.10")],
        ..ctx()
    };
    let syslog = service(Svc {
        protocol: "UDP",
        node_port: Some(30514),
        ..Svc::cluster("syslog", "10.43.0.20", 514)
    });
    let none = service_ports(&known, std::slice::from_ref(&syslog), &[]);
    let one = service_ports(
        &known,
        &[syslog],
        &[slice("syslog", &[("10.42.0.7", "n1", true)], 5514)],
    );
    assert_eq!(
        stale_udp(&known, &none, &one),
        vec![
            Stale::ToService("10.43.0.20:514".parse().unwrap()),
            Stale::ToService("192.168.1.10:30514".parse().unwrap()),
        ]
    );
}

#[test]
fn a_start_sweeps_what_no_endpoint_answers_and_the_cluster_dns_is_the_nodes() {
    use crate::network::nft::conntrack::{self, Stale};
    let server: SocketAddrV4 = "10.42.0.1:53".parse().unwrap();
    let ctx = NodeContext {
        dns: Some((ip("10.43.0.10"), server)),
        ..ctx()
    };
    let dns = service(Svc {
        protocol: "UDP",
        ..Svc::cluster("kube-dns", "10.43.0.10", 53)
    });
    let syslog = service(Svc {
        protocol: "UDP",
        node_port: Some(30514),
        ..Svc::cluster("syslog", "10.43.0.20", 514)
    });
    let ports = service_ports(
        &ctx,
        &[dns, syslog],
        &[slice("syslog", &[("10.42.0.7", "n1", true)], 5514)],
    );
    let endpoint: SocketAddrV4 = "10.42.0.7:5514".parse().unwrap();
    assert_eq!(
        stale_udp_at_start(&ctx, &ports),
        vec![
            Stale::NotFrom {
                service: "10.43.0.10:53".parse().unwrap(),
                endpoints: vec![server],
            },
            Stale::NotFrom {
                service: "10.43.0.20:514".parse().unwrap(),
                endpoints: vec![endpoint],
            },
            Stale::NodePortNotFrom {
                port: 30514,
                endpoints: vec![endpoint],
            },
        ]
    );
    // A node that knows its addresses sweeps the NodePort on those alone: a pod's
    // flow to port 30514 elsewhere is not the NodePort's.
    let known = NodeContext {
        node_ips: vec![ip("192.168.1.10"), ip("203.0.113.7")],
        ..ctx.clone()
    };
    let swept = stale_udp_at_start(&known, &ports);
    assert!(!swept
        .iter()
        .any(|s| matches!(s, Stale::NodePortNotFrom { .. })));
    for node in ["192.168.1.10:30514", "203.0.113.7:30514"] {
        assert!(swept.contains(&Stale::NotFrom {
            service: node.parse().unwrap(),
            endpoints: vec![endpoint],
        }));
    }
    // Masqueraded on its way out, so its replies come to the node.
    let out = conntrack::Flow {
        orig: conntrack::Tuple {
            src: "10.42.0.9:4000".parse().unwrap(),
            dst: "198.51.100.1:30514".parse().unwrap(),
        },
        reply: conntrack::Tuple {
            src: "198.51.100.1:30514".parse().unwrap(),
            dst: "192.168.1.10:4000".parse().unwrap(),
        },
    };
    let elsewhere = swept.iter().any(|s| s.matches(&out));
    assert!(!elsewhere, "a flow to another host's port 30514 stays");
}

#[test]
fn a_table_removed_from_outside_is_built_whole_again() {
    let svc = service(Svc::cluster("web", "10.43.0.20", 80));
    let eps = slice("web", &[("10.42.0.5", "n1", true)], 8080);
    let mut p = Proxy::new(Recorder::default(), ctx());
    // Nothing programmed yet: nothing to lose.
    assert!(!p.lost().expect("check"));
    p.sync(std::slice::from_ref(&svc), std::slice::from_ref(&eps))
        .expect("sync");
    assert!(!p.lost().expect("check"));
    p.netlink().removed.push(TABLE.to_string());
    assert!(p.lost().expect("check"));
    p.netlink().removed.clear();
    let stats = p
        .sync(std::slice::from_ref(&svc), std::slice::from_ref(&eps))
        .expect("sync");
    assert!(stats.full, "{stats:?}");
}
