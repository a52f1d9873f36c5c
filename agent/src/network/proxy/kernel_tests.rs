//! The proxy against the real kernel, each test in a network namespace of its own
//! (made with `ip netns add`, removed on drop). Needs root; fails without it.

use super::tests::{service, slice, Svc};
use super::*;
use crate::network::nft::{Batch, Message, NftSocket};
use crate::network::testns::Netns;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A fresh namespace for `tag`.
fn netns(tag: &str) -> Netns {
    let ns = Netns::new("proxy", tag);
    // A node address with a default route, so connections to Service addresses
    // are routed (the nat output hook runs after routing).
    // (A veth pair: this kernel has no dummy links.)
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["addr", "add", "10.0.0.2/24", "dev", "d0"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["route", "add", "default", "via", "10.0.0.1", "dev", "d0"]);
    // The endpoints' addresses.
    for a in ["10.99.0.5/32", "10.99.0.6/32"] {
        ns.ip(&["addr", "add", a, "dev", "lo"]);
    }
    ns
}

fn ctx(node_ips: Vec<Ipv4Addr>) -> NodeContext {
    NodeContext {
        node_name: "n1".into(),
        node_ips,
        cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
        service_cidr: "10.43.0.0/16".parse().expect("cidr"),
        bridge: "skiff0".into(),
        dns: None,
    }
}

/// Listeners on the endpoints' addresses, non-blocking so a test can see which one a
/// connection reached without a thread per listener.
struct Backends {
    listeners: Vec<(Ipv4Addr, TcpListener)>,
}

impl Backends {
    fn new(ips: &[&str], port: u16) -> Backends {
        let listeners = ips
            .iter()
            .map(|ip| {
                let ip: Ipv4Addr = ip.parse().expect("ip");
                let l = TcpListener::bind((ip, port)).expect("binding a backend");
                l.set_nonblocking(true).expect("nonblocking");
                (ip, l)
            })
            .collect();
        Backends { listeners }
    }

    /// Connects to `to` and returns the backend that accepted the connection. (The
    /// peer a backend sees is masqueraded, so the one connection at a time tells.)
    fn reached(&self, to: SocketAddr) -> Ipv4Addr {
        let c = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
        let me = c.local_addr().expect("local addr");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for (ip, l) in &self.listeners {
                match l.accept() {
                    Ok(_) => return *ip,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("accept: {e}"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "no backend accepted {me} -> {to}"
            );
            std::thread::yield_now();
        }
    }
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

#[test]
fn cluster_ip_reaches_its_endpoint_follows_a_move_and_restarts_without_duplicates() {
    let ns = netns("cip");
    ns.run(|| {
        let backends = Backends::new(&["10.99.0.5", "10.99.0.6"], 8080);
        let svc = service(Svc::cluster("web", "10.43.0.20", 80));
        let mut proxy = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
        let stats = proxy
            .sync(
                std::slice::from_ref(&svc),
                &[slice("web", &[("10.99.0.5", "n1", true)], 8080)],
            )
            .expect("first sync");
        assert!(stats.full);
        let to: SocketAddr = "10.43.0.20:80".parse().expect("addr");
        assert_eq!(backends.reached(to), ip4("10.99.0.5"));

        // The endpoint moves: a small batch, and new connections follow.
        let stats = proxy
            .sync(
                std::slice::from_ref(&svc),
                &[slice("web", &[("10.99.0.6", "n1", true)], 8080)],
            )
            .expect("second sync");
        assert!(!stats.full);
        assert!(stats.messages < 15, "{stats:?}");
        assert_eq!(backends.reached(to), ip4("10.99.0.6"));

        let mut sock = NftSocket::open().expect("socket");
        let chains = sock.chains(TABLE).expect("chains");
        let rules = sock.rule_counts(TABLE).expect("rules");
        assert!(chains.contains(&"ep-default/web/tcp/http/10.99.0.6:8080".to_string()));
        assert!(!chains.contains(&"ep-default/web/tcp/http/10.99.0.5:8080".to_string()));
        assert_eq!(rules.get("nat-output"), Some(&1));

        // A second start (as after kill -9) replaces the table: the same chains and
        // rules, none twice.
        let mut again = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
        let stats = again
            .sync(&[svc], &[slice("web", &[("10.99.0.6", "n1", true)], 8080)])
            .expect("sync after restart");
        assert!(stats.full);
        assert_eq!(sock.chains(TABLE).expect("chains"), chains);
        assert_eq!(sock.rule_counts(TABLE).expect("rules"), rules);
        assert_eq!(backends.reached(to), ip4("10.99.0.6"));

        again.remove().expect("remove");
        assert!(!sock.table_exists(TABLE).expect("table lookup"));
        // Removing twice is fine.
        again.remove().expect("second remove");
    });
}

#[test]
fn node_port_answers_on_node_addresses() {
    let ns = netns("np");
    ns.run(|| {
        let backends = Backends::new(&["10.99.0.5"], 8080);
        let svc = service(Svc {
            node_port: Some(30080),
            ..Svc::cluster("web", "10.43.0.21", 80)
        });
        let slices = [slice("web", &[("10.99.0.5", "n2", true)], 8080)];
        let to: SocketAddr = "10.0.0.2:30080".parse().expect("addr");

        // The node's addresses given.
        let mut proxy = Proxy::new(
            NftSocket::open().expect("socket"),
            ctx(vec![ip4("10.0.0.2")]),
        );
        proxy
            .sync(std::slice::from_ref(&svc), &slices)
            .expect("sync");
        assert_eq!(backends.reached(to), ip4("10.99.0.5"));

        // Every local address (fib daddr type local).
        let mut proxy = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
        proxy.sync(&[svc], &slices).expect("sync");
        assert_eq!(backends.reached(to), ip4("10.99.0.5"));
        proxy.remove().expect("remove");
    });
}

#[test]
fn a_service_without_endpoints_refuses_connections_at_once() {
    let ns = netns("rej");
    ns.run(|| {
        let svc = service(Svc {
            node_port: Some(30081),
            ..Svc::cluster("empty", "10.43.0.30", 80)
        });
        let mut proxy = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
        proxy.sync(&[svc], &[]).expect("sync");
        for to in ["10.43.0.30:80", "10.0.0.2:30081"] {
            let to: SocketAddr = to.parse().expect("addr");
            let started = Instant::now();
            let err = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .expect_err("no endpoints: refused");
            assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{to}: {err}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        proxy.remove().expect("remove");
    });
}

#[test]
fn session_affinity_keeps_a_client_on_one_endpoint_and_every_feature_is_accepted() {
    let ns = netns("aff");
    ns.run(|| {
        let backends = Backends::new(&["10.99.0.5", "10.99.0.6"], 8080);
        let sticky = service(Svc {
            affinity: Some(60),
            ..Svc::cluster("sticky", "10.43.0.40", 80)
        });
        let two = [("10.99.0.5", "n1", true), ("10.99.0.6", "n2", true)];
        let lb = service(Svc {
            node_port: Some(30090),
            lb_ip: Some("192.0.2.10"),
            external_ip: Some("192.0.2.11"),
            external_local: true,
            ..Svc::cluster("lb", "10.43.0.41", 443)
        });
        let internal = service(Svc {
            internal_local: true,
            ..Svc::cluster("internal", "10.43.0.42", 80)
        });
        let dns = service(Svc {
            protocol: "UDP",
            ..Svc::cluster("kube-dns", "10.43.0.10", 53)
        });
        let mut c = ctx(vec![]);
        c.dns = Some((ip4("10.43.0.10"), "10.0.0.2:53".parse().expect("addr")));
        let mut proxy = Proxy::new(NftSocket::open().expect("socket"), c);
        let services = [sticky, lb, internal, dns];
        let slices = [
            slice("sticky", &two, 8080),
            slice("lb", &two, 8080),
            slice("internal", &[("10.99.0.6", "n2", true)], 8080),
            slice("kube-dns", &[("10.99.0.6", "n2", true)], 53),
        ];
        proxy.sync(&services, &slices).expect("sync");

        let to: SocketAddr = "10.43.0.40:80".parse().expect("addr");
        let first = backends.reached(to);
        for _ in 0..8 {
            assert_eq!(backends.reached(to), first, "affinity holds");
        }

        // Changes to each: endpoints gone, policies flipped.
        let slices2 = [
            slice("sticky", &two[..1], 8080),
            slice("lb", &[("10.99.0.5", "n1", false)], 8080),
            slice("internal", &[("10.99.0.6", "n1", true)], 8080),
        ];
        proxy.sync(&services, &slices2).expect("sync of changes");
        assert_eq!(backends.reached(to), ip4("10.99.0.5"));
        proxy
            .sync(&services[..1], &slices2)
            .expect("sync of deletions");
        proxy.remove().expect("remove");
    });
}

#[test]
fn a_refused_message_is_named_in_the_error() {
    let ns = netns("err");
    ns.run(|| {
        let mut sock = NftSocket::open().expect("socket");
        let mut b = Batch::new();
        b.push(Message::AddTable {
            table: "skiff-err".into(),
        });
        b.push(Message::AddChain {
            table: "skiff-err".into(),
            chain: "a".into(),
            hook: None,
        });
        b.push(Message::AddRule {
            table: "skiff-err".into(),
            chain: "a".into(),
            exprs: vec![nft::Expr::Verdict(nft::Verdict::Jump("missing".into()))],
        });
        let err = nft::Netlink::apply(&mut sock, &b).expect_err("jump to a missing chain");
        let text = err.to_string();
        assert!(text.contains("adding rule to chain a"), "{text}");
        // Atomic: the table of the failed batch does not exist.
        assert!(!sock.table_exists("skiff-err").expect("lookup"));
    });
}

/// Which of `backends` receives the next datagram within a few seconds.
fn received(backends: &[(Ipv4Addr, std::net::UdpSocket)]) -> Ipv4Addr {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 16];
    loop {
        for (ip, s) in backends {
            match s.recv(&mut buf) {
                Ok(_) => return *ip,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no backend received the datagram"
        );
        std::thread::yield_now();
    }
}

/// One UDP flow through a Service: backends on both endpoints' addresses, the UDP
/// Service `dns` (10.43.0.20:80), a proxy synced with its endpoint at 10.99.0.5, and
/// a client socket whose first datagram reached it. (One client socket, one flow: its
/// datagrams keep one conntrack entry.)
struct UdpFlow {
    backends: Vec<(Ipv4Addr, std::net::UdpSocket)>,
    svc: Arc<Service>,
    proxy: Proxy<NftSocket>,
    client: std::net::UdpSocket,
}

impl UdpFlow {
    /// Run inside the test's namespace.
    fn new() -> UdpFlow {
        let backends = ["10.99.0.5", "10.99.0.6"]
            .iter()
            .map(|ip| {
                let s = std::net::UdpSocket::bind((ip4(ip), 8080)).expect("binding a backend");
                s.set_nonblocking(true).expect("nonblocking");
                (ip4(ip), s)
            })
            .collect();
        let svc = service(Svc {
            protocol: "UDP",
            ..Svc::cluster("dns", "10.43.0.20", 80)
        });
        let mut proxy = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
        proxy
            .sync(
                std::slice::from_ref(&svc),
                &[UdpFlow::endpoint("10.99.0.5")],
            )
            .expect("first sync");
        let client = std::net::UdpSocket::bind("10.0.0.2:0").expect("client");
        client.connect("10.43.0.20:80").expect("connect");
        let flow = UdpFlow {
            backends,
            svc,
            proxy,
            client,
        };
        assert_eq!(flow.send(b"a"), ip4("10.99.0.5"));
        flow
    }

    fn endpoint(ip: &str) -> Arc<EndpointSlice> {
        slice("dns", &[(ip, "n1", true)], 8080)
    }

    /// Sends `datagram` and answers which backend received it.
    fn send(&self, datagram: &[u8]) -> Ipv4Addr {
        self.client.send(datagram).expect("send");
        received(&self.backends)
    }
}

#[test]
fn a_udp_flow_follows_its_service_when_the_endpoint_moves() {
    let ns = netns("udp");
    ns.run(|| {
        let mut flow = UdpFlow::new();
        let mut sock = NftSocket::open().expect("socket");
        let old: SocketAddrV4 = "10.99.0.5:8080".parse().unwrap();
        let flows = sock.udp_flows().expect("flows");
        assert!(flows.iter().any(|f| f.reply.src == old), "{flows:?}");

        // The endpoint moves: the flow's entry goes, so its next datagram takes the
        // new rules instead of the old DNAT.
        flow.proxy
            .sync(
                std::slice::from_ref(&flow.svc),
                &[UdpFlow::endpoint("10.99.0.6")],
            )
            .expect("second sync");
        assert_eq!(flow.send(b"b"), ip4("10.99.0.6"));
        let flows = sock.udp_flows().expect("flows");
        assert!(!flows.iter().any(|f| f.reply.src == old), "{flows:?}");
    });
}

#[test]
fn a_start_forgets_udp_flows_to_an_endpoint_gone_while_the_node_was_down() {
    let ns = netns("udp-start");
    ns.run(|| {
        let mut flow = UdpFlow::new();
        // The node goes down with its table in place (kill -9); meanwhile the endpoint
        // moves. A new proxy's first sync replaces the table and sweeps the flow.
        flow.proxy = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
        let stats = flow
            .proxy
            .sync(
                std::slice::from_ref(&flow.svc),
                &[UdpFlow::endpoint("10.99.0.6")],
            )
            .expect("first sync after the start");
        assert!(stats.full);
        assert_eq!(flow.send(b"b"), ip4("10.99.0.6"));
    });
}

#[test]
fn a_flushed_ruleset_is_noticed_and_built_again() {
    let ns = netns("flush");
    ns.run(|| {
        let backends = Backends::new(&["10.99.0.5"], 8080);
        let svc = service(Svc::cluster("web", "10.43.0.20", 80));
        let eps = slice("web", &[("10.99.0.5", "n1", true)], 8080);
        let mut proxy = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
        proxy
            .sync(std::slice::from_ref(&svc), std::slice::from_ref(&eps))
            .expect("sync");
        assert!(!proxy.lost().expect("check"));
        // As `nft flush ruleset` or a firewall's reload would.
        let mut b = Batch::new();
        b.push(Message::DeleteTable {
            table: TABLE.into(),
        });
        NftSocket::open()
            .expect("socket")
            .apply(&b)
            .expect("deleting");
        assert!(proxy.lost().expect("check"));
        let stats = proxy
            .sync(std::slice::from_ref(&svc), std::slice::from_ref(&eps))
            .expect("sync again");
        assert!(stats.full);
        let to: SocketAddr = "10.43.0.20:80".parse().expect("addr");
        assert_eq!(backends.reached(to), ip4("10.99.0.5"));
        assert!(!proxy.lost().expect("check"));
    });
}

#[test]
fn conntrack_flows_are_made_listed_and_deleted() {
    use crate::network::nft::conntrack::{Flow, Stale, Tuple};
    let ns = netns("ct");
    ns.run(|| {
        let t = |s: &str, d: &str| Tuple {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
        };
        let dnat = Flow {
            orig: t("10.42.0.5:40000", "10.43.0.53:53"),
            reply: t("10.42.1.7:5353", "10.42.0.5:40000"),
        };
        let other = Flow {
            orig: t("10.42.0.5:40001", "10.43.0.54:53"),
            reply: t("10.42.1.8:5353", "10.42.0.5:40001"),
        };
        let mut sock = NftSocket::open().expect("socket");
        sock.add_udp_flow(&dnat, 60).expect("making a flow");
        sock.add_udp_flow(&other, 60).expect("making a flow");
        let flows = sock.udp_flows().expect("flows");
        assert!(flows.contains(&dnat) && flows.contains(&other), "{flows:?}");

        let gone = [Stale::ToEndpoint("10.42.1.7:5353".parse().unwrap())];
        assert_eq!(sock.forget_udp(&gone).expect("forgetting"), 1);
        assert_eq!(sock.udp_flows().expect("flows"), vec![other]);
        // Deleting what is gone already is fine.
        sock.delete_flow(&dnat).expect("deleting again");
    });
}

#[test]
fn nft_lists_the_table_with_typed_sets() {
    let ns = netns("list");
    let listed = ns.run(|| {
        let svc = service(Svc {
            node_port: Some(30080),
            affinity: Some(60),
            ..Svc::cluster("web", "10.43.0.20", 80)
        });
        let mut proxy = Proxy::new(
            NftSocket::open().expect("socket"),
            ctx(vec![ip4("10.0.0.2")]),
        );
        proxy
            .sync(
                &[svc],
                &[slice(
                    "web",
                    &[("10.99.0.5", "n1", true), ("10.99.0.6", "n1", true)],
                    8080,
                )],
            )
            .expect("sync");
        // nftables' own tool reads back what skiff programmed (as an operator would).
        let out = std::process::Command::new("nft")
            .args(["list", "table", "ip", TABLE])
            .output()
            .expect("running nft (Debian's nftables)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    assert!(!listed.contains("invalid"), "{listed}");
    for want in [
        "type ipv4_addr . inet_proto . inet_service : verdict",
        "type inet_proto . inet_service : verdict",
        "10.43.0.20 . tcp . 80 : goto svc-default/web/tcp/http",
        "tcp . 30080 : goto ext-default/web/tcp/http",
        "elements = { 10.0.0.2 }",
        "0 : goto ep-default/web/tcp/http/10.99.0.5:8080, 1 : goto ep-default/web/tcp/http/10.99.0.6:8080",
        "tcp flags syn / syn,rst tcp option maxseg size set rt mtu",
    ] {
        assert!(listed.contains(want), "no `{want}` in\n{listed}");
    }
}

#[test]
fn a_connection_rerouted_into_a_narrower_link_gets_its_mss_clamped() {
    // The node reaches a ClusterIP by its default route (MTU 1500); the endpoint sits
    // behind a link of MTU 1400, as a pod across the overlay does. The endpoint's side
    // of that link is full size, so only the clamped SYN tells it the path is narrower.
    let ns = netns("mss");
    let peer = Netns::new("proxy", "mss-peer");
    ns.ip(&[
        "link", "add", "n0", "mtu", "1400", "type", "veth", "peer", "name", "p0", "netns",
        &peer.name,
    ]);
    ns.ip(&["addr", "add", "10.1.0.1/24", "dev", "n0"]);
    ns.ip(&["link", "set", "n0", "up"]);
    peer.ip(&["addr", "add", "10.1.0.2/24", "dev", "p0"]);
    peer.ip(&["link", "set", "p0", "up"]);
    let listener = peer.run(|| TcpListener::bind("10.1.0.2:8080").expect("binding the endpoint"));

    // The MSS the endpoint will send with to a client whose SYN came through `ns`.
    let endpoint_mss = |with_clamp: bool| {
        ns.run(|| {
            let svc = service(Svc::cluster("web", "10.43.0.20", 80));
            let mut proxy = Proxy::new(NftSocket::open().expect("socket"), ctx(vec![]));
            proxy
                .sync(
                    std::slice::from_ref(&svc),
                    &[slice("web", &[("10.1.0.2", "n2", true)], 8080)],
                )
                .expect("sync");
            if !with_clamp {
                let mut b = Batch::new();
                b.push(Message::FlushChain {
                    table: TABLE.into(),
                    chain: "mss-clamp".into(),
                });
                NftSocket::open()
                    .expect("socket")
                    .apply(&b)
                    .expect("unclamping");
            }
            let to: SocketAddr = "10.43.0.20:80".parse().expect("addr");
            let _client = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
            let (accepted, _) = listener.accept().expect("accept");
            let mss = nix::sys::socket::getsockopt(&accepted, nix::sys::socket::sockopt::TcpMaxSeg)
                .expect("TCP_MAXSEG");
            proxy.remove().expect("removing the table");
            mss
        })
    };
    // Without the clamp the endpoint believes the client's 1460; with it, 1360 (less
    // 12 bytes of timestamps either way).
    let unclamped = endpoint_mss(false);
    assert!(unclamped > 1400, "unclamped MSS {unclamped}");
    let clamped = endpoint_mss(true);
    assert!(clamped <= 1360, "clamped MSS {clamped}");
}
