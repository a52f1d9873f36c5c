//! Policy enforcement against the real kernel: a "node" network namespace with a
//! bridge, and three "pods", each a namespace of its own joined to the bridge by a
//! veth (made with `ip`, removed on drop). Needs root; fails without it.

use super::tests::{namespace, pod, policy};
use super::*;
use crate::network::nft::NftSocket;
use crate::network::testns::Netns;
use serde_json::json;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The node's namespace with bridge `br0` at 10.42.0.1/24, bridged traffic passing
/// the IPv4 hooks as on a skiff node.
fn node_ns() -> Netns {
    let n = Netns::new("pol", "node");
    n.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "nf_call_iptables",
        "1",
    ]);
    n.ip(&["addr", "add", "10.42.0.1/24", "dev", "br0"]);
    n.ip(&["link", "set", "br0", "up"]);
    n
}

/// A pod namespace at `addr` on the node's bridge through veth `host_if`.
fn pod_ns(node: &Netns, tag: &str, host_if: &str, addr: &str) -> Netns {
    let p = Netns::new("pol", tag);
    node.ip(&[
        "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &p.name,
    ]);
    node.ip(&["link", "set", host_if, "master", "br0"]);
    node.ip(&["link", "set", host_if, "up"]);
    p.ip(&["addr", "add", addr, "dev", "eth0"]);
    p.ip(&["link", "set", "eth0", "up"]);
    p
}

/// Whether a TCP connection from inside `from` to `to` is made. A refused or
/// unanswered attempt is `false`; the deadline bounds the unanswered one (policy drops
/// are silent).
fn connects(from: &Netns, to: SocketAddr) -> bool {
    from.run(
        || match TcpStream::connect_timeout(&to, Duration::from_millis(1500)) {
            Ok(_) => true,
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => false,
            Err(e) => panic!("connecting to {to}: unexpected {e}"),
        },
    )
}

#[test]
fn policies_block_what_they_deny_allow_what_they_allow_and_removal_restores() {
    let node = node_ns();
    let web = pod_ns(&node, "web", "vweb", "10.42.0.2/24");
    let front = pod_ns(&node, "front", "vfront", "10.42.0.3/24");
    let other = pod_ns(&node, "other", "vother", "10.42.0.4/24");
    let listener = web.run(|| TcpListener::bind("10.42.0.2:8080").expect("listening in web"));
    let to: SocketAddr = "10.42.0.2:8080".parse().expect("addr");

    let pods = vec![
        pod(
            "default",
            "web",
            json!({"app": "web"}),
            "10.42.0.2",
            "n1",
            &[("http", 8080)],
        ),
        pod(
            "default",
            "front",
            json!({"app": "front"}),
            "10.42.0.3",
            "n1",
            &[("http", 9090)],
        ),
        pod(
            "default",
            "other",
            json!({"app": "other"}),
            "10.42.0.4",
            "n1",
            &[],
        ),
    ];
    let nss = vec![namespace("default", json!({}))];
    let from_front = policy(
        "default",
        "from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "front"}}}],
                         "ports": [{"port": "http"}]}],
        }),
    );
    let front_no_egress = policy(
        "default",
        "front-no-egress",
        json!({"podSelector": {"matchLabels": {"app": "front"}}, "policyTypes": ["Egress"]}),
    );

    // Open before any policy.
    assert!(connects(&front, to));
    assert!(connects(&other, to));

    let scope = NodeScope {
        node_name: "n1".into(),
        host_addrs: vec!["10.42.0.1".parse().expect("ip")],
    };
    let mut enforcer = node.run(|| Policy::new(NftSocket::open().expect("socket"), scope));
    // The socket was opened in the node's namespace and stays there.
    node.run(|| enforcer.sync(&pods, &nss, std::slice::from_ref(&from_front)))
        .expect("sync");
    assert!(connects(&front, to), "front is allowed by from-front");
    assert!(!connects(&other, to), "other is denied by from-front");
    assert!(
        connects(&node, to),
        "the node itself always reaches its pods"
    );

    // An egress deny on front, added incrementally, cuts front off too.
    let stats = node
        .run(|| enforcer.sync(&pods, &nss, &[from_front.clone(), front_no_egress.clone()]))
        .expect("incremental sync");
    assert!(!stats.full);
    assert_eq!(stats.egress_isolated, 1);
    assert!(!connects(&front, to), "front's egress is denied");

    // Dropping the egress policy again lets front through.
    node.run(|| enforcer.sync(&pods, &nss, std::slice::from_ref(&from_front)))
        .expect("sync");
    assert!(connects(&front, to));
    assert!(!connects(&other, to));

    // An ipBlock with an exception and a port range, in place of from-front.
    let lan_but_other = policy(
        "default",
        "lan-but-other",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.42.0.0/24", "except": ["10.42.0.4/32"]}}],
                         "ports": [{"port": 8000, "endPort": 8100}]}],
        }),
    );
    node.run(|| enforcer.sync(&pods, &nss, std::slice::from_ref(&lan_but_other)))
        .expect("sync");
    assert!(connects(&front, to), "front is inside the block");
    assert!(!connects(&other, to), "other is the block's exception");

    // An egress named port is each destination's own number: other may reach web's
    // http (8080) and front's (9090), but not web on front's number.
    let web_9090 = web.run(|| TcpListener::bind("10.42.0.2:9090").expect("listening in web"));
    let front_9090 = front.run(|| TcpListener::bind("10.42.0.3:9090").expect("listening in front"));
    let other_to_http = policy(
        "default",
        "other-to-http",
        json!({
            "podSelector": {"matchLabels": {"app": "other"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchExpressions": [
                            {"key": "app", "operator": "In", "values": ["web", "front"]}]}}],
                        "ports": [{"port": "http"}]}],
        }),
    );
    node.run(|| enforcer.sync(&pods, &nss, std::slice::from_ref(&other_to_http)))
        .expect("sync");
    assert!(connects(&other, to), "web's own http");
    assert!(
        connects(&other, "10.42.0.3:9090".parse().expect("addr")),
        "front's own http"
    );
    assert!(
        !connects(&other, "10.42.0.2:9090".parse().expect("addr")),
        "front's number on web"
    );
    drop((web_9090, front_9090));

    node.run(|| enforcer.remove()).expect("remove");
    assert!(connects(&other, to), "removal restores connectivity");
    assert!(!node
        .run(|| NftSocket::open().expect("socket").table_exists(TABLE))
        .expect("table lookup"));
    node.run(|| enforcer.remove()).expect("second remove");
    drop(listener);
}
