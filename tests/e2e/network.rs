//! The pod network, Services and cluster DNS on the multi-node harness (needs root): a
//! server and two agents, each host its own network namespace. Pods on different nodes
//! reach each other by address over the VXLAN overlay; a node's pods hold addresses of
//! its own range; after `kill -9` of an agent and a restart, no address is leaked and
//! nothing is made twice; a deleted node's routes go from the others.

use crate::cluster::Cluster;
use crate::harness::{wait_until, Kubectl};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(90);
const KUBECTL: Kubectl = Kubectl::V132;

/// A server on host 0 and agents on the others, all Ready, with `extra` server flags.
pub fn cluster(hosts: usize, extra: &[&str]) -> Cluster {
    let mut c = Cluster::new(hosts);
    c.start_server(0, extra);
    let token = std::fs::read_to_string(c.host(0).data_dir().join("server/token"))
        .expect("the server token");
    for i in 1..hosts {
        let h = c.host(i);
        let args = vec![
            "agent".to_string(),
            "--config".into(),
            "/dev/null".into(),
            "--data-dir".into(),
            h.data_dir().display().to_string(),
            "--server".into(),
            c.server_url(),
            "--token".into(),
            token.trim().to_string(),
            "--node-ip".into(),
            h.address().to_string(),
            "--node-name".into(),
            h.name().to_string(),
        ];
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
