//! Machines joining a cluster (needs root): one server and two `skiff agent`s, each in
//! its own network namespace on the multi-node harness ([`crate::cluster`]). The agents
//! join with the server's token and go Ready; a Deployment spreads over the three
//! nodes and runs real containers there; `kubectl logs` and `exec` reach the agents'
//! pods; a wrong token and a token naming another CA are refused with the reason; a
//! node's certificate reads its own pods' Secrets but not another node's, and modifies
//! only its own Node; an agent restarts as the same node; the server restarts under running agents without a
//! container restarting; a cut-off agent goes NotReady and its pods are made again on
//! the others.

use crate::cluster::Cluster;
use crate::harness::{wait_until, Kubectl, Output};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Convergence on a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(90);
const KUBECTL: Kubectl = Kubectl::V132;

/// The arguments of `skiff agent` on host `i`, joining with `token`.
pub fn agent_args(c: &Cluster, i: usize, token: &str) -> Vec<String> {
    let h = c.host(i);
    vec![
        "agent".into(),
        "--config".into(),
        "/dev/null".into(),
        "--data-dir".into(),
        h.data_dir().display().to_string(),
        "--server".into(),
        c.server_url(),
        "--token".into(),
        token.into(),
        "--node-ip".into(),
        h.address().to_string(),
        "--node-name".into(),
        h.name().to_string(),
    ]
}

/// Node `name`'s Ready condition status ("True", "False", "Unknown"), if it exists.
fn ready(c: &Cluster, name: &str) -> Option<String> {
    let out = c.kubectl(KUBECTL).run(&["get", "node", name, "-o", "json"]);
    let n: Value = serde_json::from_str(&out.stdout).ok()?;
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(String::from)
}

fn wait_ready(c: &Cluster, name: &str, want: &str) {
    wait_until(SOON, &format!("node {name} Ready={want}"), || {
        match ready(c, name) {
            Some(s) if s == want => Ok(()),
            other => Err(format!("Ready={other:?}")),
        }
    });
}

/// The running, not terminating pods labelled app=web: name → (node, container id,
/// restarts).
fn web_pods(c: &Cluster) -> BTreeMap<String, (String, String, i64)> {
    let out = c
        .kubectl(KUBECTL)
        .run(&["get", "pods", "-l", "app=web", "-o", "json"]);
    let list: Value = serde_json::from_str(out.ok()).expect("a pod list");
    let mut pods = BTreeMap::new();
    for p in list["items"].as_array().into_iter().flatten() {
        let running = p["status"]["phase"] == "Running"
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["containerStatuses"][0]["ready"] == true;
        if running {
            let cs = &p["status"]["containerStatuses"][0];
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
                    cs["containerID"].as_str().unwrap_or_default().to_string(),
                    cs["restartCount"].as_i64().unwrap_or(-1),
                ),
            );
        }
    }
    pods
}

fn nodes_of(pods: &BTreeMap<String, (String, String, i64)>) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for (node, _, _) in pods.values() {
        *by_node.entry(node.clone()).or_insert(0) += 1;
    }
    by_node
}

/// Runs `skiff agent` on host `i` with `token` and a fresh data directory; it must
/// stop by itself.
fn refused_join(c: &Cluster, i: usize, token: &str) -> Output {
    let dir = tempfile::tempdir().expect("a data dir");
    let mut args = agent_args(c, i, token);
    args[4] = dir.path().display().to_string();
    args[12] = "refused".into();
    let mut cmd = c.host(i).command(env!("CARGO_BIN_EXE_skiff"));
    cmd.args(&args);
    let out = crate::harness::run_command(cmd, None, Duration::from_secs(30));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        !dir.path().join("agent/tls/client-node.crt").exists(),
        "a refused agent has no certificate"
    );
    out
}

#[test]
fn agents_join_run_pods_and_survive_restarts() {
    let mut c = Cluster::new(3);
    // A short grace so that a cut-off agent goes NotReady within seconds.
    c.start_server(0, &["--node-monitor-grace-period", "5"]);
    let token_path = c.host(0).data_dir().join("server/token");
    let token = std::fs::read_to_string(&token_path).expect("the server token");
    let token = token.trim().to_string();

    // A wrong secret, and a token naming another CA: one line each, saying why.
    let (hash_part, _) = token.split_once("::").expect("a secure token");
    let wrong = refused_join(&c, 1, &format!("{hash_part}::server:not-the-secret"));
    let last = wrong.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("skiff: ") && last.contains("the join token was refused"),
        "{wrong:?}"
    );
    let foreign = refused_join(&c, 1, &format!("K10{}::server:x", "ab".repeat(32)));
    let last = foreign.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("is not the one the token names") && last.contains("refusing to join"),
        "{foreign:?}"
    );

    // Both agents join and go Ready.
    let started = Instant::now();
    for i in [1, 2] {
        let args = agent_args(&c, i, &token);
        c.start_agent(i, &args);
    }
    for name in ["host0", "host1", "host2"] {
        wait_ready(&c, name, "True");
    }
    eprintln!(
        "both agents Ready {:?} after their start",
        started.elapsed()
    );
    let cert = c.host(1).data_dir().join("agent/tls/client-node.crt");
    let first_cert = std::fs::read(&cert).expect("the agent's client certificate");
    let password = std::fs::read(c.host(1).data_dir().join("agent/node-password")).unwrap();

    // A Deployment of six spreads over the three nodes. Its pods tolerate an
    // unreachable node for 2 s (not the default 300), for the cut-off below.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                     "effect": "NoExecute", "tolerationSeconds": 2}],
                    "containers": [{
                        "name": "web",
                        "image": "docker.io/library/busybox:latest",
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "echo started on $(hostname); exec sleep 3600"],
                    }],
                },
            },
        },
    });
    c.kubectl(KUBECTL)
        .stdin(deployment.to_string())
        .run(&["apply", "-f", "-"])
        .ok();
    let pods = wait_until(SOON, "six web pods running", || {
        let pods = web_pods(&c);
        if pods.len() == 6 {
            Ok(pods)
        } else {
            Err(format!("{pods:?}"))
        }
    });
    let spread = nodes_of(&pods);
    assert_eq!(
        spread.keys().collect::<Vec<_>>(),
        ["host0", "host1", "host2"],
        "{spread:?}"
    );

    // logs and exec reach pods on each agent, through the server.
    for agent in ["host1", "host2"] {
        let (pod, _) = pods
            .iter()
            .find(|(_, (node, _, _))| node == agent)
            .expect("a pod on the agent");
        let logs = c.kubectl(KUBECTL).run(&["logs", pod]);
        assert_eq!(logs.ok().trim(), format!("started on {pod}"));
        let exec = c
            .kubectl(Kubectl::Current)
            .run(&["exec", pod, "--", "cat", "/etc/hostname"]);
        assert_eq!(exec.ok().trim(), pod.as_str());
    }

    // The node authorizer: host1's own certificate reads the Secret of a pod bound to
    // it, not that of a pod bound to host2, and may not modify host2's Node.
    for (node, secret) in [("host1", "s1"), ("host2", "s2")] {
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "stringData": {"k": "v"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("uses-{secret}")},
             "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                      "containers": [{"name": "c", "image": "docker.io/library/busybox:latest",
                                      "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                                      "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                      "volumes": [{"name": "s", "secret": {"secretName": secret}}]}},
        ]});
        c.kubectl(KUBECTL)
            .stdin(objects.to_string())
            .run(&["apply", "-f", "-"])
            .ok();
    }
    let tls = c.host(1).data_dir().join("agent/tls");
    let as_host1 = |args: &[&str]| {
        let mut cmd = std::process::Command::new(KUBECTL.program());
        cmd.env("KUBECONFIG", "/dev/null")
            .env("HOME", c.host(1).home())
            .arg(format!("--server={}", c.server_url()))
            .arg(format!(
                "--certificate-authority={}",
                tls.join("ca.crt").display()
            ))
            .arg(format!(
                "--client-certificate={}",
                tls.join("client-node.crt").display()
            ))
            .arg(format!(
                "--client-key={}",
                tls.join("client-node.key").display()
            ))
            .args(args);
        crate::harness::run_command(cmd, None, Duration::from_secs(30))
    };
    assert_eq!(
        as_host1(&["get", "secret", "s1", "-o", "jsonpath={.data.k}"]).ok(),
        "dg=="
    );
    let denied = as_host1(&["get", "secret", "s2"]);
    let err = denied.err();
    assert!(
        err.contains(r#"secrets "s2" is forbidden: User "system:node:host1" cannot get resource "secrets" in API group "" in the namespace "default""#),
        "{denied:?}"
    );
    as_host1(&["annotate", "node", "host1", "checked=yes"]).ok();
    let denied = as_host1(&["annotate", "node", "host2", "checked=yes"]);
    assert!(
        denied.err().contains(
            r#"nodes "host2" is forbidden: node "host1" is not allowed to modify node "host2""#
        ),
        "{denied:?}"
    );
    c.kubectl(KUBECTL)
        .run(&["delete", "pod", "uses-s1", "uses-s2", "--wait=false"])
        .ok();

    // An agent restarts as the same node: same certificate, same password, Ready.
    c.host_mut(1).restart();
    wait_ready(&c, "host1", "True");
    assert_eq!(std::fs::read(&cert).unwrap(), first_cert);
    assert_eq!(
        std::fs::read(c.host(1).data_dir().join("agent/node-password")).unwrap(),
        password
    );
    let log = std::fs::read_to_string(c.host(1).log_path()).unwrap_or_default();
    assert!(
        log.contains("using the node's certificates from its last join"),
        "{}",
        c.host(1).log_tail()
    );

    // The server restarts under the running agents: they reconnect, and no
    // container restarts.
    c.host_mut(0).restart();
    for name in ["host0", "host1", "host2"] {
        wait_ready(&c, name, "True");
    }
    let after = web_pods(&c);
    assert_eq!(after, pods, "pods and their containers are unchanged");

    // host2 is cut off: it goes NotReady, and its pods are made again on the others.
    c.host(2).cut_off();
    wait_ready(&c, "host2", "Unknown");
    let moved = wait_until(SOON, "six web pods running on host0 and host1", || {
        let pods = web_pods(&c);
        let fresh: Vec<_> = pods.values().filter(|(n, _, _)| n != "host2").collect();
        if fresh.len() == 6 {
            Ok(pods)
        } else {
            Err(format!("{pods:?}"))
        }
    });
    assert!(nodes_of(&moved).keys().all(|n| n != "host2"), "{moved:?}");
    c.host(2).reconnect();
    wait_ready(&c, "host2", "True");
}
