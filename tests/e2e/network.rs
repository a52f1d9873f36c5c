//! The pod network, Services and cluster DNS on the multi-node harness (needs root): a
//! server and two agents, each host its own network namespace. Pods on different nodes
//! reach each other by address over the VXLAN overlay; a node's pods hold addresses of
//! its own range; after `kill -9` of an agent and a restart, no address is leaked and
//! nothing is made twice; a deleted node's routes go from the others.

use crate::cluster::Cluster;
use crate::harness::{normalized_lines, wait_until, Kubectl};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(90);
const KUBECTL: Kubectl = Kubectl::V132;

/// A server on host 0 and agents on the others, all Ready, with `extra` flags for
/// every node.
pub fn cluster(hosts: usize, extra: &[&str]) -> Cluster {
    let c = Cluster::new(hosts);
    start(c, extra)
}

/// Starts the server on host 0 of `c` and agents on the others, all with `extra`
/// flags, and waits until every node is Ready.
pub fn start(c: Cluster, extra: &[&str]) -> Cluster {
    start_with(c, extra, extra)
}

/// Like [`start`], with `server` flags for the server and `extra` for the agents.
pub fn start_with(mut c: Cluster, server: &[&str], extra: &[&str]) -> Cluster {
    let hosts = c.hosts().len();
    c.start_server(0, server);
    let token = std::fs::read_to_string(c.host(0).data_dir().join("server/token"))
        .expect("the server token");
    for i in 1..hosts {
        let mut args = crate::agents::agent_args(&c, i, token.trim());
        args.extend(extra.iter().map(|s| s.to_string()));
        c.start_agent(i, &args);
    }
    for i in 0..hosts {
        let name = c.host(i).name().to_string();
        wait_until(SOON, &format!("node {name} Ready"), || {
            let out = c.kubectl(KUBECTL).run(&[
                "get",
                "node",
                &name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if out.stdout.trim() == "True" {
                Ok(())
            } else {
                Err(out.stdout.clone())
            }
        });
    }
    c
}

/// A Deployment `name` of `replicas` busybox web servers answering their own pod name
/// on port 8080, spread over the nodes.
pub fn web(c: &Cluster, name: &str, replicas: u32) {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": name}}}],
                    "containers": [{
                        "name": "web",
                        "image": "docker.io/library/busybox:latest",
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }],
                },
            },
        },
    });
    c.kubectl(KUBECTL)
        .stdin(deployment.to_string())
        .run(&["apply", "-f", "-"])
        .ok();
}

/// The ready pods labelled app=`app`: name → (node, pod IP).
pub fn ready_pods(c: &Cluster, app: &str) -> BTreeMap<String, (String, String)> {
    let out = c
        .kubectl(KUBECTL)
        .run(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    let list: Value = serde_json::from_str(out.ok()).expect("a pod list");
    let mut pods = BTreeMap::new();
    for p in list["items"].as_array().into_iter().flatten() {
        let ready = p["status"]["phase"] == "Running"
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["containerStatuses"][0]["ready"] == true;
        if ready {
            pods.insert(
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                (
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["status"]["podIP"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            );
        }
    }
    pods
}

/// Waits for `n` ready pods labelled app=`app`.
pub fn wait_pods(c: &Cluster, app: &str, n: usize) -> BTreeMap<String, (String, String)> {
    wait_until(SOON, &format!("{n} ready {app} pods"), || {
        let pods = ready_pods(c, app);
        if pods.len() == n {
            Ok(pods)
        } else {
            let all = c.kubectl(KUBECTL).run(&[
                "get", "pods", "-l", &format!("app={app}"), "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.status.containerStatuses[0].state}{\"\\n\"}{end}",
            ]);
            Err(format!("ready: {pods:?}; all:\n{}", all.stdout))
        }
    })
}

/// The body pod `pod` gets for `GET /` from `host` (a name or an address) on `port`,
/// over busybox's `nc` (the static busybox's `wget` crashes looking up its port name
/// without the host's NSS libraries); an error's text when it fails.
pub fn fetch(c: &Cluster, pod: &str, host: &str, port: u16) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    let out = c
        .kubectl(KUBECTL)
        .run(&["exec", pod, "--", "sh", "-c", &script]);
    match out.stdout.split_once("\r\n\r\n") {
        Some((head, body))
            if out.status.success() && head.starts_with("HTTP/1.") && head.contains(" 200 ") =>
        {
            Ok(body.trim().to_string())
        }
        _ => Err(format!("{}{}", out.stdout, out.stderr)),
    }
}

/// The node's podCIDR.
fn pod_cidr(c: &Cluster, node: &str) -> String {
    c.kubectl(KUBECTL)
        .run(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"])
        .ok()
        .trim()
        .to_string()
}

fn in_range(ip: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').expect("a CIDR");
    let bits: u32 = bits.parse().expect("a prefix");
    let ip: std::net::Ipv4Addr = ip.parse().expect("an address");
    let net: std::net::Ipv4Addr = net.parse().expect("an address");
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The addresses host `i`'s pod network holds on disk, by holder.
fn held(c: &Cluster, i: usize) -> Vec<String> {
    let dir = c.host(i).data_dir().join("agent/network/ipam");
    let mut out = Vec::new();
    for range in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(range.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::Ipv4Addr>().is_ok() {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// The lines of `ip args` run in host `i`'s namespace.
fn ip(c: &Cluster, i: usize, args: &[&str]) -> String {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    c.host(i).run(&full).stdout
}

#[test]
fn pods_reach_each_other_across_nodes_and_nothing_leaks() {
    let mut c = cluster(3, &[]);
    // Each node has its own range.
    let ranges: Vec<String> = (0..3).map(|i| pod_cidr(&c, c.host(i).name())).collect();
    assert!(
        ranges
            .iter()
            .all(|r| r.starts_with("10.42.") && r.ends_with("/24")),
        "{ranges:?}"
    );
    let mut unique = ranges.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ranges:?}");

    web(&c, "web", 6);
    let pods = wait_pods(&c, "web", 6);
    let mut by_node: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (name, (node, ip)) in &pods {
        let i = (0..3).find(|i| c.host(*i).name() == node).expect("a host");
        assert!(
            in_range(ip, &ranges[i]),
            "{name} on {node} has {ip}, not in {}",
            ranges[i]
        );
        by_node.entry(node).or_default().push((name, ip));
    }
    assert_eq!(by_node.len(), 3, "{pods:?}");

    // Every pod reaches a pod on every other node, and one on its own, by address.
    for (node, mine) in &by_node {
        let (from, _) = mine[0];
        for (other, theirs) in &by_node {
            let (to, to_ip) = theirs[if other == node { theirs.len() - 1 } else { 0 }];
            let got = wait_until(
                Duration::from_secs(20),
                &format!("{from} reaches {to}"),
                || fetch(&c, from, to_ip, 8080),
            );
            assert_eq!(got, to, "{from} on {node} fetched {to_ip} on {other}");
        }
    }

    // The overlay: host0 routes each agent's range through skiff.1.
    let routes = ip(&c, 0, &["route", "show", "proto", "101"]);
    for r in &ranges[1..] {
        assert!(
            routes.contains(&format!("{r} via ")) && routes.contains("skiff.1"),
            "{routes}"
        );
    }

    // kill -9 of host1's skiff and a restart: the same addresses held, no more, and the
    // bridge holds one veth per pod.
    let on_host1: Vec<String> = by_node["host1"]
        .iter()
        .map(|(_, ip)| ip.to_string())
        .collect();
    let mut expect = on_host1.clone();
    expect.sort();
    assert_eq!(held(&c, 1), expect);
    c.host_mut(1).kill();
    c.host_mut(1).restart();
    let again = wait_pods(&c, "web", 6);
    assert_eq!(
        again, pods,
        "pods keep their addresses across a restart of their node"
    );
    assert_eq!(held(&c, 1), expect, "no address leaked or given twice");
    let ports = ip(&c, 1, &["-o", "link", "show", "master", "skiff0"]);
    assert_eq!(ports.lines().count(), on_host1.len(), "{ports}");
    let addrs = ip(&c, 1, &["-o", "-4", "addr", "show", "dev", "skiff0"]);
    assert_eq!(addrs.lines().count(), 1, "{addrs}");

    // Pods deleted while their node is down free their addresses when it comes back.
    c.host_mut(2).kill();
    c.kubectl(KUBECTL)
        .run(&["scale", "deployment", "web", "--replicas", "0"])
        .ok();
    let h2: Vec<String> = by_node["host2"]
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let mut args = vec!["delete", "pod", "--grace-period=0", "--force"];
    args.extend(h2.iter().map(String::as_str));
    c.kubectl(KUBECTL).run(&args);
    c.host_mut(2).restart();
    wait_until(SOON, "host2 frees its pods' addresses", || {
        let h = held(&c, 2);
        if h.is_empty() {
            Ok(())
        } else {
            Err(format!("{h:?}"))
        }
    });

    // A deleted node's routes go from the others.
    c.host_mut(2).kill();
    c.kubectl(KUBECTL).run(&["delete", "node", "host2"]).ok();
    wait_until(SOON, "host0 drops the route to host2's pods", || {
        let routes = ip(&c, 0, &["route", "show", "proto", "101"]);
        if routes.contains(&ranges[2]) {
            Err(routes)
        } else {
            Ok(())
        }
    });
}

/// What `sh -c script` prints in pod `pod` (an error's text when it fails).
fn sh(c: &Cluster, pod: &str, script: &str) -> Result<String, String> {
    let out = c
        .kubectl(KUBECTL)
        .run(&["exec", pod, "--", "sh", "-c", script]);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{}{}", out.stdout, out.stderr))
    }
}

/// The body host `i` gets for `GET /` from `addr:port`, with busybox's nc in its
/// network namespace.
fn host_fetch(c: &Cluster, i: usize, addr: &str, port: u16) -> Result<String, String> {
    let script =
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {addr} {port}");
    let out = c.host(i).run(&["sh", "-c", &script]);
    match out.stdout.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.trim().to_string()),
        _ => Err(format!("{}{}", out.stdout, out.stderr)),
    }
}

/// The IPv4 addresses busybox's nslookup in pod `pod` finds for `name`.
fn lookup(c: &Cluster, pod: &str, name: &str) -> Result<Vec<String>, String> {
    let out = sh(c, pod, &format!("nslookup {name}"))?;
    // The answer section follows the server's lines: "Name: ..." then "Address: ...".
    let answers = out.split_once("Name:").map(|(_, a)| a).unwrap_or("");
    let mut ips: Vec<String> = answers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    ips.sort();
    if ips.is_empty() {
        Err(out)
    } else {
        Ok(ips)
    }
}

fn apply(c: &Cluster, obj: Value) {
    c.kubectl(KUBECTL)
        .stdin(obj.to_string())
        .run(&["apply", "-f", "-"])
        .ok();
}

/// A DNS server on `addr:53` that answers A questions for names under `example.com`
/// with 192.0.2.7 and NXDOMAIN for others: the "internet" resolver of the hosts'
/// `--resolv-conf`. Stops when dropped.
struct Upstream {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    fn start(addr: std::net::Ipv4Addr) -> Upstream {
        let socket =
            std::net::UdpSocket::bind((addr, 53)).expect("binding the test's upstream DNS");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                // The question ends after its name's zero byte and 4 bytes of type/class.
                let Some(end) = buf[12..n].iter().position(|b| *b == 0).map(|p| 12 + p + 5) else {
                    continue;
                };
                let mut reply = buf[..end].to_vec();
                reply[2] = 0x81; // response, recursion desired
                reply[3] = 0x80; // recursion available, NOERROR
                reply[6..12].copy_from_slice(&[0; 6]);
                let qtype = u16::from_be_bytes([buf[end - 4], buf[end - 3]]);
                let ours = buf[12..end - 4].ends_with(b"\x07example\x03com\x00");
                if !ours {
                    reply[3] = 0x83; // NXDOMAIN
                } else if qtype == 1 {
                    reply[7] = 1;
                    reply.extend_from_slice(&[
                        0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7,
                    ]);
                }
                let _ = socket.send_to(&reply, from);
            }
        });
        Upstream { stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn services_and_cluster_dns_across_nodes() {
    // The hosts' resolver is a DNS server of the test's, on the harness bridge.
    let c = Cluster::new(3);
    let _upstream = Upstream::start(c.net().gateway());
    let resolv = c.host(0).dir().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {}\nsearch example.org\n", c.net().gateway()),
    )
    .unwrap();
    let resolv = resolv.display().to_string();
    let c = start(c, &["--resolv-conf", &resolv]);
    web(&c, "web", 6);
    let port = |name: &str, p: u16| json!({"name": name, "port": p, "targetPort": 8080, "protocol": "TCP"});
    for (name, spec) in [
        (
            "web",
            json!({"selector": {"app": "web"}, "ports": [port("http", 80)]}),
        ),
        (
            "web-np",
            json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [port("http", 80)]}),
        ),
        (
            "web-lb",
            json!({"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [port("http", 8088)]}),
        ),
        (
            "web-headless",
            json!({"clusterIP": "None", "selector": {"app": "web"}, "ports": [port("http", 8080)]}),
        ),
    ] {
        apply(
            &c,
            json!({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        );
    }
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "labels": {"app": "client"}},
        "spec": {"nodeName": "host1", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "docker.io/library/busybox:latest",
                                 "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}),
    );
    let pods = wait_pods(&c, "web", 6);
    wait_pods(&c, "client", 1);

    // Full-size frames to pods on the same node and to Services; the overlay's MTU
    // (the harness's 1500 less VXLAN's 50) to other nodes' pods.
    // (busybox's ip leaves route metrics out: iproute2's, in the pod's namespace.)
    let mtu = sh(&c, "client", "cat /sys/class/net/eth0/mtu").unwrap();
    assert_eq!(mtu.trim(), "1500");
    let uid = c
        .kubectl(KUBECTL)
        .run(&["get", "pod", "client", "-o", "jsonpath={.metadata.uid}"]);
    let netns = c
        .host(1)
        .data_dir()
        .join("agent/pods")
        .join(uid.ok())
        .join("ns-net");
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "route"])
        .output()
        .expect("running ip route in the pod's namespace");
    let routes = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = normalized_lines(&routes);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("10.42.0.0/16") && l.contains("mtu 1450")),
        "no route to the cluster CIDR at MTU 1450:\n{routes}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("mtu 1450") && !l.starts_with("10.42.0.0/16")),
        "a route other than the cluster CIDR's at MTU 1450:\n{routes}"
    );

    // The pod's resolv.conf is upstream's.
    let resolv = sh(&c, "client", "cat /etc/resolv.conf").unwrap();
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");

    // By name, through the ClusterIP: the answers spread over pods on several nodes.
    let cluster_ip = c
        .kubectl(KUBECTL)
        .run(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .trim()
        .to_string();
    let found = wait_until(SOON, "web.default.svc.cluster.local resolves", || {
        lookup(&c, "client", "web.default.svc.cluster.local")
    });
    assert_eq!(found, vec![cluster_ip.clone()]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let got = wait_until(
            Duration::from_secs(20),
            "web answers through its Service",
            || fetch(&c, "client", "web.default.svc.cluster.local", 80),
        );
        assert!(pods.contains_key(&got), "{got} is not a web pod");
        seen.insert(got);
    }
    let nodes: std::collections::BTreeSet<&String> = seen.iter().map(|p| &pods[p].0).collect();
    assert!(
        seen.len() >= 3 && nodes.len() >= 2,
        "requests reached {seen:?} on {nodes:?}"
    );
    // The search list: the short name works too.
    fetch(&c, "client", "web", 80).unwrap();

    // Headless: the pods' own addresses.
    let mut want: Vec<String> = pods.values().map(|(_, ip)| ip.clone()).collect();
    want.sort();
    assert_eq!(
        lookup(&c, "client", "web-headless.default.svc.cluster.local").unwrap(),
        want
    );

    // A pod reaches itself through its own Service (hairpin).
    let (me, _) = pods.iter().next().unwrap();
    wait_until(
        SOON,
        "a web pod reaches itself through its Service",
        || match fetch(&c, me, &cluster_ip, 80) {
            Ok(got) if &got == me => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // The kubernetes Service reaches the API server from a pod.
    // (Plain text to a TLS port: the server answers with an alert and closes.)
    let api = sh(
        &c,
        "client",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 kubernetes.default.svc.cluster.local 443 >/dev/null && echo open",
    )
    .unwrap();
    assert_eq!(api.trim(), "open");

    // NodePort: every node's address answers.
    let node_port: u16 = c
        .kubectl(KUBECTL)
        .run(&[
            "get",
            "svc",
            "web-np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .ok()
        .trim()
        .parse()
        .unwrap();
    for i in 0..3 {
        let addr = c.host(i).address().to_string();
        let got = wait_until(SOON, &format!("NodePort on {addr}"), || {
            host_fetch(&c, (i + 1) % 3, &addr, node_port)
        });
        assert!(pods.contains_key(&got), "{got}");
    }

    // LoadBalancer: the nodes' addresses are its ingress, and answer on its port.
    let mut nodes_ips: Vec<String> = (0..3).map(|i| c.host(i).address().to_string()).collect();
    nodes_ips.sort();
    let ingress = wait_until(SOON, "web-lb's ingress", || {
        let out = c.kubectl(KUBECTL).run(&[
            "get",
            "svc",
            "web-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        let mut ips: Vec<String> = out.stdout.split_whitespace().map(String::from).collect();
        ips.sort();
        if ips == nodes_ips {
            Ok(ips)
        } else {
            Err(out.stdout)
        }
    });
    for ip in &ingress {
        let got = wait_until(SOON, &format!("LoadBalancer on {ip}"), || {
            host_fetch(&c, 0, ip, 8088)
        });
        assert!(pods.contains_key(&got), "{got}");
    }

    // Source ranges: only host 1 reaches the load balancer's addresses; its NodePort
    // stays open to all. Without them, host 0 reaches it again.
    let lb_ip = c.host(2).address().to_string();
    let patch = |ranges: Value| {
        c.kubectl(KUBECTL)
            .run(&[
                "patch",
                "svc",
                "web-lb",
                "--type=merge",
                "-p",
                &json!({"spec": {"loadBalancerSourceRanges": ranges}}).to_string(),
            ])
            .ok();
    };
    patch(json!([format!("{}/32", c.host(1).address())]));
    wait_until(
        SOON,
        "host 0 kept from the load balancer",
        || match host_fetch(&c, 0, &lb_ip, 8088) {
            Ok(got) => Err(format!("host 0 got {got}")),
            Err(_) => Ok(()),
        },
    );
    let got = host_fetch(&c, 1, &lb_ip, 8088).expect("host 1 is in the source ranges");
    assert!(pods.contains_key(&got), "{got}");
    let lb_node_port = c
        .kubectl(KUBECTL)
        .run(&[
            "get",
            "svc",
            "web-lb",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .ok()
        .parse::<u16>()
        .expect("web-lb's NodePort");
    let got = host_fetch(&c, 0, &lb_ip, lb_node_port).expect("the NodePort is not limited");
    assert!(pods.contains_key(&got), "{got}");
    patch(Value::Null);
    wait_until(SOON, "host 0 reaches the load balancer again", || {
        host_fetch(&c, 0, &lb_ip, 8088)
    });

    // A name outside the cluster, through the host's resolver; the host's search
    // domain follows the cluster's in the pod's search list.
    assert_eq!(
        lookup(&c, "client", "outside.example.com").unwrap(),
        vec!["192.0.2.7".to_string()]
    );
    let resolv = sh(&c, "client", "cat /etc/resolv.conf").unwrap();
    assert!(resolv.contains("cluster.local example.org"), "{resolv}");

    // A StatefulSet's pods find each other by their stable names.
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "db", "port": 5000}]}}),
    );
    apply(
        &c,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"terminationGracePeriodSeconds": 0,
                                       "containers": [{"name": "db", "image": "docker.io/library/busybox:latest",
                                                       "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}}}),
    );
    let db = wait_pods(&c, "db", 2);
    let want = vec![db["db-1"].1.clone()];
    let found = wait_until(SOON, "db-0 resolves db-1 by its stable name", || {
        lookup(&c, "db-0", "db-1.db.default.svc.cluster.local")
    });
    assert_eq!(found, want);

    // A live connection through a Service survives the Service's other endpoints
    // going and coming: echo servers say their name, then echo.
    apply(
        &c,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "echo"}},
                 "template": {"metadata": {"labels": {"app": "echo"}},
                              "spec": {"terminationGracePeriodSeconds": 0,
                                       "containers": [{"name": "echo", "image": "docker.io/library/busybox:latest",
                                           "imagePullPolicy": "Never",
                                           "command": ["sh", "-c", "printf '#!/bin/sh\\nhostname\\nexec cat\\n' > /echo && chmod +x /echo && exec nc -ll -p 9000 -e /echo"],
                                           "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1}}]}}}}),
    );
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 9000}]}}),
    );
    let echoes = wait_pods(&c, "echo", 3);
    let mut live = c.kubectl(KUBECTL).spawn(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        "(sleep 12; echo ping) | nc echo.default.svc.cluster.local 9000",
    ]);
    let first = live.wait_for_line(SOON, |l| echoes.contains_key(l));
    let others: Vec<&str> = echoes
        .keys()
        .map(String::as_str)
        .filter(|n| *n != first)
        .collect();
    let mut args = vec!["delete", "pod", "--wait=false"];
    args.extend(others.iter().copied());
    c.kubectl(KUBECTL).run(&args).ok();
    c.kubectl(KUBECTL)
        .run(&["scale", "deployment", "echo", "--replicas", "4"])
        .ok();
    live.wait_for_line(SOON, |l| l == "ping");

    // A NetworkPolicy: web pods take connections from the client only, on 8080.
    apply(
        &c,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-client"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                              "ports": [{"protocol": "TCP", "port": 8080}]}]}}),
    );
    let targets: Vec<(String, String)> = ready_pods(&c, "web")
        .into_iter()
        .map(|(n, (_, ip))| (n, ip))
        .collect();
    for (name, ip) in &targets {
        wait_until(SOON, &format!("db-0 is kept from {name}"), || {
            match fetch(&c, "db-0", ip, 8080) {
                Ok(got) => Err(format!("db-0 got {got}")),
                Err(_) => Ok(()),
            }
        });
        assert_eq!(
            fetch(&c, "client", ip, 8080).as_deref(),
            Ok(name.as_str()),
            "the client is allowed"
        );
    }
    c.kubectl(KUBECTL)
        .run(&["delete", "networkpolicy", "web-from-client"])
        .ok();
    for (name, ip) in &targets {
        let got = wait_until(SOON, &format!("db-0 reaches {name} again"), || {
            fetch(&c, "db-0", ip, 8080)
        });
        assert_eq!(&got, name);
    }

    // Scaling down removes endpoints: soon no request reaches a deleted pod.
    c.kubectl(KUBECTL)
        .run(&["scale", "deployment", "web", "--replicas", "2"])
        .ok();
    let left = wait_pods(&c, "web", 2);
    wait_until(SOON, "only the two pods left answer", || {
        for _ in 0..6 {
            let got = fetch(&c, "client", &cluster_ip, 80)?;
            if !left.contains_key(&got) {
                return Err(format!("{got} answered"));
            }
        }
        Ok(())
    });

    // A Service's last pod, being deleted, still serves through the ClusterIP while
    // it terminates: no endpoint is ready, so the one still serving takes the traffic
    // (it ignores SIGTERM, so it serves until its grace period ends).
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "last", "labels": {"app": "last"}},
        "spec": {"nodeName": "host2", "terminationGracePeriodSeconds": 60,
                 "containers": [{"name": "web", "image": "docker.io/library/busybox:latest",
                                 "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", "trap '' TERM; mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www & wait"],
                                 "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}),
    );
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "last"},
        "spec": {"selector": {"app": "last"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    wait_pods(&c, "last", 1);
    let last_ip = c
        .kubectl(KUBECTL)
        .run(&["get", "svc", "last", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .to_string();
    let got = wait_until(SOON, "the last pod answers through its Service", || {
        fetch(&c, "client", &last_ip, 80)
    });
    assert_eq!(got, "last");
    c.kubectl(KUBECTL)
        .run(&["delete", "pod", "last", "--wait=false"])
        .ok();
    wait_until(SOON, "the last pod's endpoint is terminating", || {
        let out = c.kubectl(KUBECTL).run(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=last",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions}",
        ]);
        let conditions = out.ok();
        if conditions.contains(r#""terminating":true"#) && conditions.contains(r#""serving":true"#)
        {
            Ok(())
        } else {
            Err(conditions.to_string())
        }
    });
    for _ in 0..3 {
        assert_eq!(
            fetch(&c, "client", &last_ip, 80).as_deref(),
            Ok("last"),
            "a terminating pod that still serves is used while no other is ready"
        );
    }
}

#[test]
fn host_gw_routes_pods_through_the_other_nodes_addresses() {
    // The backend is the cluster's: the server's flag, which agents read.
    let c = start_with(Cluster::new(2), &["--network-backend", "host-gw"], &[]);
    let ranges: Vec<String> = (0..2).map(|i| pod_cidr(&c, c.host(i).name())).collect();
    web(&c, "web", 2);
    let pods = wait_pods(&c, "web", 2);
    let on = |host: usize| {
        let name = c.host(host).name();
        pods.iter()
            .find(|(_, (node, _))| node == name)
            .map(|(pod, (_, ip))| (pod.clone(), ip.clone()))
            .unwrap_or_else(|| panic!("no web pod on {name}: {pods:?}"))
    };
    let ((a, a_ip), (b, b_ip)) = (on(0), on(1));
    for (from, to, to_ip) in [(&a, &b, &b_ip), (&b, &a, &a_ip)] {
        let got = wait_until(
            Duration::from_secs(20),
            &format!("{from} reaches {to}"),
            || fetch(&c, from, to_ip, 8080),
        );
        assert_eq!(&got, to);
    }
    // Plain routes through the other node's address; no overlay device, and pods
    // get no smaller MTU towards other nodes.
    for (i, other) in [(0, 1), (1, 0)] {
        let routes = ip(&c, i, &["route", "show", "proto", "101"]);
        let want = format!("{} via {} dev eth0", ranges[other], c.host(other).address());
        assert!(routes.contains(&want), "host{i}: no `{want}` in\n{routes}");
        let links = ip(&c, i, &["-o", "link", "show"]);
        assert!(
            !links.contains("skiff.1"),
            "host{i} has the overlay:\n{links}"
        );
    }
    assert_eq!(
        sh(&c, &a, "cat /sys/class/net/eth0/mtu").unwrap().trim(),
        "1500"
    );
}
