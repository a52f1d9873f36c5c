//! The policy decisions with plain values and the recording fake.

use super::rules::{EGRESS_PODS, INGRESS_PODS};
use super::*;
use crate::network::nft::{expr, Expr, Message, Recorder, Verdict};
use serde_json::{json, Value};

pub(super) fn node() -> NodeScope {
    NodeScope {
        node_name: "n1".into(),
        host_addrs: vec!["10.42.0.1".parse().expect("ip")],
    }
}

/// A running pod with `labels`, address `ip`, on `node`, its container naming ports
/// (name, number).
pub(super) fn pod(
    ns: &str,
    name: &str,
    labels: Value,
    ip: &str,
    node: &str,
    ports: &[(&str, i32)],
) -> Arc<Pod> {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .expect("a valid Pod"),
    )
}

pub(super) fn namespace(name: &str, labels: Value) -> Arc<Namespace> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("a valid Namespace"),
    )
}

pub(super) fn policy(ns: &str, name: &str, spec: Value) -> Arc<NetworkPolicy> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .expect("a valid NetworkPolicy"),
    )
}

fn key(ip: &str) -> Vec<u8> {
    ip.parse::<Ipv4Addr>().expect("ip").octets().to_vec()
}

fn set_addrs(rs: &PolicyRuleset, set: &str) -> Vec<Ipv4Addr> {
    rs.elements
        .get(set)
        .unwrap_or_else(|| panic!("no set {set}"))
        .keys()
        .map(|k| Ipv4Addr::new(k[0], k[1], k[2], k[3]))
        .collect()
}

fn chain<'a>(rs: &'a PolicyRuleset, name: &str) -> &'a Vec<Vec<Expr>> {
    &rs.chains
        .get(name)
        .unwrap_or_else(|| panic!("no chain {name} in {:?}", rs.chains.keys()))
        .rules
}

/// Whether some rule of `rules` compares a register with `data`.
fn compares(rules: &[Vec<Expr>], data: &[u8]) -> bool {
    rules
        .iter()
        .flatten()
        .any(|e| matches!(e, Expr::Cmp { data: d, .. } if d == data))
}

fn drop_rule() -> Vec<Expr> {
    vec![Expr::Counter, Expr::Verdict(Verdict::Drop)]
}

fn world() -> (Vec<Arc<Pod>>, Vec<Arc<Namespace>>) {
    let pods = vec![
        pod(
            "default",
            "web",
            json!({"app": "web"}),
            "10.42.0.10",
            "n1",
            &[("http", 8080)],
        ),
        pod(
            "default",
            "front",
            json!({"app": "front"}),
            "10.42.0.11",
            "n1",
            &[],
        ),
        pod(
            "default",
            "front-far",
            json!({"app": "front"}),
            "10.42.1.5",
            "n2",
            &[],
        ),
        pod(
            "default",
            "other",
            json!({"app": "other"}),
            "10.42.0.12",
            "n1",
            &[],
        ),
        pod(
            "mon",
            "prom",
            json!({"app": "prom"}),
            "10.42.0.20",
            "n1",
            &[],
        ),
        pod(
            "mon",
            "graf",
            json!({"app": "graf"}),
            "10.42.0.21",
            "n1",
            &[],
        ),
        pod(
            "dev",
            "prom",
            json!({"app": "prom"}),
            "10.42.0.30",
            "n1",
            &[],
        ),
    ];
    let namespaces = vec![
        namespace("default", json!({})),
        namespace("mon", json!({"team": "ops"})),
        namespace("dev", json!({"team": "dev"})),
    ];
    (pods, namespaces)
}

#[test]
fn without_policies_nothing_is_isolated() {
    let (pods, nss) = world();
    let rs = desired(&node(), &pods, &nss, &[]);
    assert!(rs.elements[INGRESS_PODS].is_empty());
    assert!(rs.elements[EGRESS_PODS].is_empty());
    let chains: Vec<&String> = rs.chains.keys().collect();
    assert_eq!(chains, ["egress", "ingress"]);
    assert_eq!(
        set_addrs(&rs, rules::NODE_ADDRS),
        [Ipv4Addr::new(10, 42, 0, 1)]
    );
}

#[test]
fn an_empty_policy_denies_all_ingress_to_the_local_pods_it_selects() {
    let (pods, nss) = world();
    let deny = policy("default", "deny", json!({"podSelector": {}}));
    let rs = desired(&node(), &pods, &nss, &[deny]);
    // The local pods of the namespace, not front-far (on n2) nor other namespaces.
    let isolated: Vec<&Vec<u8>> = rs.elements[INGRESS_PODS].keys().collect();
    assert_eq!(
        isolated,
        [&key("10.42.0.10"), &key("10.42.0.11"), &key("10.42.0.12")]
    );
    assert_eq!(
        rs.elements[INGRESS_PODS][&key("10.42.0.10")],
        Some(Verdict::Jump("in/default/web".into()))
    );
    assert_eq!(chain(&rs, "in/default/web"), &vec![drop_rule()]);
    // Ingress only: egress stays open.
    assert!(rs.elements[EGRESS_PODS].is_empty());
}

#[test]
fn a_pod_selector_allows_the_selected_pods_on_any_node() {
    let (pods, nss) = world();
    let allow = policy(
        "default",
        "from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "front"}}}],
                         "ports": [{"port": 8080}]}],
        }),
    );
    let rs = desired(&node(), &pods, &nss, &[allow]);
    assert_eq!(rs.elements[INGRESS_PODS].len(), 1);
    assert_eq!(
        set_addrs(&rs, "in/default/from-front/0"),
        [Ipv4Addr::new(10, 42, 0, 11), Ipv4Addr::new(10, 42, 1, 5)]
    );
    let rules = chain(&rs, "in/default/web");
    assert_eq!(rules.len(), 2);
    assert!(rules[0].iter().any(
        |e| matches!(e, Expr::Lookup { set, dreg: None, .. } if set == "in/default/from-front/0")
    ));
    assert!(compares(rules, &8080u16.to_be_bytes()));
    assert_eq!(rules[0].last(), Some(&Expr::Verdict(Verdict::Accept)));
    assert_eq!(rules[1], drop_rule());
}

#[test]
fn namespace_selectors_pick_pods_in_labelled_namespaces() {
    let (pods, nss) = world();
    let allow = policy(
        "default",
        "from-ops",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]},
                {"from": [{"namespaceSelector": {"matchExpressions": [
                              {"key": "team", "operator": "Exists"}]},
                           "podSelector": {"matchLabels": {"app": "prom"}}}]},
            ],
        }),
    );
    let rs = desired(&node(), &pods, &nss, &[allow]);
    assert_eq!(
        set_addrs(&rs, "in/default/from-ops/0"),
        [Ipv4Addr::new(10, 42, 0, 20), Ipv4Addr::new(10, 42, 0, 21)]
    );
    assert_eq!(
        set_addrs(&rs, "in/default/from-ops/1"),
        [Ipv4Addr::new(10, 42, 0, 20), Ipv4Addr::new(10, 42, 0, 30)]
    );
    // Two allow rules (all ports) and the drop.
    assert_eq!(chain(&rs, "in/default/web").len(), 3);
}

#[test]
fn an_ip_block_allows_its_range_but_not_its_exceptions() {
    let (pods, nss) = world();
    let allow = policy(
        "default",
        "from-lan",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [
                {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.5.0/24"]}},
                {"ipBlock": {"cidr": "172.16.0.0/12"}},
                {"ipBlock": {"cidr": "fd00::/8"}},
            ]}],
        }),
    );
    let rs = desired(&node(), &pods, &nss, &[allow]);
    let rules = chain(&rs, "in/default/web");
    // The block with an exception jumps to its chain; the plain one accepts; IPv6 is
    // skipped.
    assert_eq!(rules.len(), 3);
    assert!(compares(&rules[..1], &[192, 168, 0, 0]));
    assert_eq!(
        rules[0].last(),
        Some(&Expr::Verdict(Verdict::Jump(
            "in/default/from-lan/0/block0".into()
        )))
    );
    assert!(compares(&rules[1..2], &[172, 16, 0, 0]));
    assert_eq!(rules[1].last(), Some(&Expr::Verdict(Verdict::Accept)));
    let block = chain(&rs, "in/default/from-lan/0/block0");
    assert_eq!(block.len(), 2);
    assert!(compares(&block[..1], &[192, 168, 5, 0]));
    assert_eq!(block[0].last(), Some(&Expr::Verdict(Verdict::Return)));
    assert_eq!(block[1], vec![Expr::Verdict(Verdict::Accept)]);
}

#[test]
fn a_named_port_is_the_destination_pods_container_port() {
    let (pods, nss) = world();
    let allow = policy(
        "default",
        "http",
        json!({
            "podSelector": {},
            "ingress": [{"ports": [{"port": "http", "protocol": "TCP"}]}],
        }),
    );
    let rs = desired(&node(), &pods, &nss, &[allow]);
    let web = chain(&rs, "in/default/web");
    assert_eq!(web.len(), 2);
    assert!(compares(web, &8080u16.to_be_bytes()));
    assert!(compares(web, &[expr_tcp()]));
    // A pod without a port of that name allows nothing.
    assert_eq!(chain(&rs, "in/default/front"), &vec![drop_rule()]);
}

#[test]
fn an_egress_named_port_is_each_destination_pods_own_number() {
    let pods = vec![
        pod(
            "default",
            "client",
            json!({"app": "client"}),
            "10.42.0.10",
            "n1",
            &[],
        ),
        pod(
            "default",
            "a",
            json!({"app": "web"}),
            "10.42.0.11",
            "n1",
            &[("http", 80)],
        ),
        pod(
            "default",
            "b",
            json!({"app": "web"}),
            "10.42.1.12",
            "n2",
            &[("http", 8080)],
        ),
        pod(
            "default",
            "db",
            json!({"app": "db"}),
            "10.42.0.13",
            "n1",
            &[("http", 9090)],
        ),
        pod(
            "default",
            "far",
            json!({"app": "far"}),
            "10.42.5.14",
            "n2",
            &[("http", 7070)],
        ),
        pod(
            "default",
            "kept",
            json!({"app": "far"}),
            "10.42.5.15",
            "n2",
            &[("http", 7171)],
        ),
    ];
    let nss = vec![namespace("default", json!({}))];
    let p = policy(
        "default",
        "to-web",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [
                    {"podSelector": {"matchLabels": {"app": "web"}}},
                    {"ipBlock": {"cidr": "10.42.5.0/24", "except": ["10.42.5.15/32"]}},
                ],
                "ports": [{"port": "http"}],
            }],
        }),
    );
    let rs = desired(&node(), &pods, &nss, &[p]);
    let pairs: Vec<Vec<u8>> = rs.elements["out/default/to-web/0/named"]
        .keys()
        .cloned()
        .collect();
    let pair = |ip: &str, port: u16| expr::service_key(ip.parse().unwrap(), expr::TCP, port);
    // a on 80 and b on 8080, not a on 8080 nor b on 80; the ipBlock's pod on its own
    // number; no pod the rule does not reach, nor one its block excepts.
    assert_eq!(
        pairs,
        [
            pair("10.42.0.11", 80),
            pair("10.42.1.12", 8080),
            pair("10.42.5.14", 7070),
        ]
    );
    // No rule allows those numbers to every peer.
    let client = chain(&rs, "out/default/client");
    for port in [80u16, 8080, 7070] {
        assert!(
            !compares(client, &port.to_be_bytes()),
            "{port} is open to every peer"
        );
    }
    assert!(client.iter().any(|r| r.contains(&Expr::Lookup {
        set: "out/default/to-web/0/named".into(),
        sreg: crate::network::nft::REG32_00,
        dreg: None,
        invert: false,
    })));
}

fn expr_tcp() -> u8 {
    crate::network::nft::expr::TCP
}

#[test]
fn egress_rules_isolate_egress_and_default_to_both_types() {
    let (pods, nss) = world();
    let p = policy(
        "default",
        "to-prom",
        json!({
            "podSelector": {"matchLabels": {"app": "front"}},
            "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "prom"}}}],
                        "ports": [{"port": 9000, "endPort": 9003, "protocol": "UDP"}]}],
        }),
    );
    let egress_only = policy(
        "default",
        "egress-only",
        json!({"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Egress"]}),
    );
    let rs = desired(&node(), &pods, &nss, &[p, egress_only]);
    // Ingress is isolated too (the default policy types), with nothing allowed.
    assert_eq!(chain(&rs, "in/default/front"), &vec![drop_rule()]);
    let out = chain(&rs, "out/default/front");
    assert_eq!(
        set_addrs(&rs, "out/default/to-prom/0"),
        [Ipv4Addr::new(10, 42, 0, 20), Ipv4Addr::new(10, 42, 0, 30)]
    );
    // 9000..=9003 is one aligned block: one allow rule, then the drop.
    assert_eq!(out.len(), 2);
    assert!(compares(out, &9000u16.to_be_bytes()));
    assert!(out[0]
        .iter()
        .any(|e| matches!(e, Expr::Payload { offset: 16, .. })));
    assert_eq!(
        rs.elements[EGRESS_PODS].keys().collect::<Vec<_>>(),
        [&key("10.42.0.11"), &key("10.42.0.12")]
    );
    assert_eq!(chain(&rs, "out/default/other"), &vec![drop_rule()]);
    assert!(!rs.elements[INGRESS_PODS].contains_key(&key("10.42.0.12")));
}

#[test]
fn policies_add_up() {
    let (pods, nss) = world();
    let a = policy(
        "default",
        "a",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let b = policy(
        "default",
        "b",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 443}]}]}),
    );
    let rs = desired(&node(), &pods, &nss, &[b, a]);
    let web = chain(&rs, "in/default/web");
    assert_eq!(web.len(), 3);
    assert!(compares(&web[..1], &80u16.to_be_bytes()));
    assert!(compares(&web[1..2], &443u16.to_be_bytes()));
    assert_eq!(chain(&rs, "in/default/other").len(), 2);
}

#[test]
fn port_blocks_cover_exactly_the_range() {
    for (lo, hi) in [
        (0, 65535),
        (1, 1),
        (80, 80),
        (1000, 2000),
        (9000, 9003),
        (65530, 65535),
        (0, 5),
    ] {
        let blocks = port_blocks(lo, hi);
        for p in 0..=u16::MAX {
            let inside = blocks.iter().filter(|(v, m)| p & m == *v).count();
            let want = usize::from((lo..=hi).contains(&p));
            assert_eq!(inside, want, "port {p} for {lo}..={hi}: {blocks:?}");
        }
    }
    assert_eq!(port_blocks(9000, 9003), [(9000, 0xfffc)]);
    assert_eq!(port_blocks(0, 65535), [(0, 0)]);
}

#[test]
fn sync_replaces_the_table_first_then_sends_only_changes() {
    let (pods, nss) = world();
    let deny = policy("default", "deny", json!({"podSelector": {}}));
    let mut p = Policy::new(Recorder::default(), node());
    let stats = p
        .sync(&pods, &nss, std::slice::from_ref(&deny))
        .expect("sync");
    assert!(stats.full);
    assert_eq!(stats.ingress_isolated, 3);
    let first = &p.netlink().batches[0].messages;
    assert_eq!(
        first[0],
        Message::AddTable {
            table: TABLE.into()
        }
    );
    assert_eq!(
        first[1],
        Message::DeleteTable {
            table: TABLE.into()
        }
    );
    assert!(first
        .iter()
        .all(|m| !format!("{m:?}").contains("\"skiff\"")));

    let stats = p
        .sync(&pods, &nss, std::slice::from_ref(&deny))
        .expect("sync");
    assert_eq!(stats.messages, 0);
    assert_eq!(p.netlink().batches.len(), 1);

    // A failed batch changes nothing: the next sync sends the same difference.
    p.netlink().fail_next = Some("boom".into());
    let err = p.sync(&pods, &nss, &[]).expect_err("injected");
    assert!(err.to_string().contains("network policy"), "{err}");
    let again = p.sync(&pods, &nss, &[]).expect("sync");
    let batches = &p.netlink().batches;
    assert_eq!(batches[1], batches[2]);
    assert!(!again.full);

    p.remove().expect("remove");
    let last = p.netlink().batches.last().expect("a batch").clone();
    assert_eq!(
        last.messages[1],
        Message::DeleteTable {
            table: TABLE.into()
        }
    );
}
