//! Node lifecycle, cordon and drain with PodDisruptionBudgets on simulated nodes.
//!
//! * A node whose simulator stops goes NotReady (its conditions Unknown), is tainted
//!   unreachable, and the pods on it that tolerate that for 2 s are deleted then; their
//!   Deployment replaces them on the nodes that are still alive, while the old ones stay
//!   Terminating (nothing is left to finish them), as upstream, until the node is
//!   deleted and pod GC deletes them at once.
//! * `kubectl cordon` keeps new pods off a node; the disruption controller keeps the
//!   budget's status, so the eviction subresource refuses what a budget does not allow
//!   (429) and grants what it does; `kubectl drain` empties a node and the Deployment
//!   comes back to full strength elsewhere.

use crate::harness::{normalize, normalized_lines, wait_until, Kubectl, Output, Server};
use crate::sim::Sim;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Convergence on a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);
/// The kubectl these tests run (the kubectl tier covers both versions).
const KUBECTL: Kubectl = Kubectl::V132;
/// The grace period the server gets: above the simulator's 10 s lease renewal, with
/// room for a late one, and short enough for a quick test.
const GRACE_SECONDS: &str = "20";

fn kc(server: &Server, args: &[&str]) -> Output {
    server.kubectl(KUBECTL).run(args)
}

#[track_caller]
fn apply(server: &Server, doc: &Value) {
    server
        .kubectl(KUBECTL)
        .stdin(doc.to_string())
        .run(&["apply", "-f", "-"])
        .ok();
}

/// Waits until `kubectl get nodes` lists `n` nodes, all Ready.
fn wait_ready_nodes(server: &Server, n: usize) {
    wait_until(SOON, &format!("{n} Ready nodes"), || {
        let out = kc(server, &["get", "nodes", "--no-headers"]);
        let ready = normalized_lines(out.ok())
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some("Ready"))
            .count();
        (ready == n).then_some(()).ok_or(out.stdout.clone())
    });
}

/// The STATUS column of `kubectl get node <name>`.
fn node_status(server: &Server, name: &str) -> String {
    let out = kc(server, &["get", "node", name, "--no-headers"]);
    normalize(out.ok())
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// A node's taints as `key:effect`.
fn taints(server: &Server, name: &str) -> Vec<String> {
    let node = kc(server, &["get", "node", name, "-o", "json"]).json();
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", str_of(&t["key"]), str_of(&t["effect"])))
        .collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The pods labelled `app=<app>`.
fn pods(server: &Server, app: &str) -> Vec<Value> {
    let list = kc(
        server,
        &["get", "pods", "-l", &format!("app={app}"), "-o", "json"],
    )
    .json();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn node_of(pod: &Value) -> &str {
    str_of(&pod["spec"]["nodeName"])
}

fn name_of(v: &Value) -> &str {
    str_of(&v["metadata"]["name"])
}

/// How many Running, Ready pods of `app=<app>` that are not being deleted each node
/// has, once there are `n` of them.
fn wait_ready_pods(server: &Server, app: &str, n: usize, what: &str) -> BTreeMap<String, usize> {
    wait_until(SOON, what, || {
        let all = pods(server, app);
        let live: Vec<&Value> = all.iter().filter(|p| !terminating(p)).collect();
        let mut per_node = BTreeMap::new();
        for p in live.iter().filter(|p| ready(p)) {
            *per_node.entry(node_of(p).to_string()).or_insert(0) += 1;
        }
        let count: usize = per_node.values().sum();
        (count == n && live.len() == n)
            .then_some(per_node.clone())
            .ok_or(format!("{per_node:?}; {} live pods", live.len()))
    })
}

/// A Deployment of `replicas` pods labelled `app=<name>`, spread over nodes by a
/// preferred anti-affinity, with `tolerations` added to its template.
fn deployment(name: &str, replicas: u32, tolerations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "tolerations": tolerations,
                    "affinity": {"podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": {"app": name}},
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }],
                    }},
                    "containers": [{"name": "app", "image": "nginx:1.27"}],
                },
            },
        },
    })
}

/// The events of every namespace.
fn events(server: &Server) -> Vec<Value> {
    let list = kc(server, &["get", "events", "-A", "-o", "json"]).json();
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_unreachable_node_is_tainted_and_its_pods_are_replaced() {
    let server = Server::start_with(&["--node-monitor-grace-period", GRACE_SECONDS]);
    let _a = Sim::start(&server, &["--count", "2", "--name-prefix", "a-"]);
    let mut b = Sim::start(&server, &["--count", "1", "--name-prefix", "b-"]);
    wait_ready_nodes(&server, 3);

    let unreachable_for_2s = json!([{
        "key": "node.kubernetes.io/unreachable", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 2,
    }]);
    apply(&server, &deployment("web", 3, unreachable_for_2s));
    let placed = wait_ready_pods(&server, "web", 3, "three Ready pods of web");
    assert_eq!(placed.get("b-0"), Some(&1), "one pod per node: {placed:?}");
    // Admission added the default toleration of not-ready (the pod has its own of
    // unreachable).
    let pod = &pods(&server, "web")[0];
    let tolerations: Vec<(String, Value)> = pod["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                str_of(&t["key"]).to_string(),
                t["tolerationSeconds"].clone(),
            )
        })
        .collect();
    assert_eq!(
        tolerations,
        [
            ("node.kubernetes.io/unreachable".to_string(), json!(2)),
            ("node.kubernetes.io/not-ready".to_string(), json!(300)),
        ]
    );
    let doomed: Vec<String> = pods(&server, "web")
        .iter()
        .filter(|p| node_of(p) == "b-0")
        .map(|p| name_of(p).to_string())
        .collect();

    // The node stops reporting: NotReady, its conditions Unknown, tainted unreachable.
    b.stop();
    wait_until(SOON, "b-0 to go NotReady", || {
        let s = node_status(&server, "b-0");
        (s == "NotReady").then_some(()).ok_or(s)
    });
    let node = kc(&server, &["get", "node", "b-0", "-o", "json"]).json();
    for c in node["status"]["conditions"].as_array().unwrap() {
        if c["type"] == "NetworkUnavailable" {
            continue;
        }
        assert_eq!(c["status"], "Unknown", "{c}");
        assert_eq!(c["reason"], "NodeStatusUnknown", "{c}");
        assert_eq!(c["message"], "Kubelet stopped posting node status.", "{c}");
    }
    wait_until(SOON, "b-0 to be tainted unreachable", || {
        let t = taints(&server, "b-0");
        let want = [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute",
        ];
        want.iter()
            .all(|w| t.iter().any(|x| x == w))
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
    // The nodes still reporting are untouched.
    assert_eq!(node_status(&server, "a-0"), "Ready");
    assert!(taints(&server, "a-0").is_empty());

    // 2 s after the taint the pod on b-0 is deleted: it stays Terminating (no kubelet
    // finishes it), and its replacement runs on an a- node.
    let placed = wait_ready_pods(&server, "web", 3, "three Ready pods of web on a- nodes");
    assert!(
        placed.keys().all(|n| n.starts_with("a-")),
        "pods on {placed:?}"
    );
    let stuck = pods(&server, "web");
    for name in &doomed {
        let p = stuck.iter().find(|p| name_of(p) == name).unwrap();
        assert!(terminating(p), "{name} should be Terminating: {p}");
        let target = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .cloned()
            .unwrap_or_default();
        assert_eq!(target["reason"], "DeletionByTaintManager", "{p}");
    }
    let listed = kc(&server, &["get", "pods", "-l", "app=web", "--no-headers"]);
    let terminating_rows = normalized_lines(listed.ok())
        .into_iter()
        .filter(|l| l.split(' ').nth(2) == Some("Terminating"))
        .count();
    assert_eq!(terminating_rows, doomed.len(), "{listed:?}");
    wait_until(SOON, "web to be 3/3", || {
        let out = kc(&server, &["get", "deployment", "web", "--no-headers"]);
        let line = normalize(out.ok());
        (line.split(' ').nth(1) == Some("3/3"))
            .then_some(())
            .ok_or(line)
    });

    // What happened is told as upstream tells it.
    let seen = events(&server);
    let has = |reason: &str, message: &str| {
        seen.iter()
            .any(|e| e["reason"] == reason && str_of(&e["message"]).starts_with(message))
    };
    assert!(
        has("NodeNotReady", "Node b-0 status is now: NodeNotReady"),
        "{seen:#?}"
    );
    assert!(
        has(
            "RegisteredNode",
            "Node a-0 event: Registered Node a-0 in Controller"
        ),
        "{seen:#?}"
    );
    for name in &doomed {
        assert!(
            has(
                "TaintManagerEviction",
                &format!("Marking for deletion Pod default/{name}")
            ),
            "{seen:#?}"
        );
    }

    // Deleting the dead node lets pod GC finish its pods at once, after the 40 s
    // quarantine upstream gives a node that may come back (and a 20 s pass period).
    kc(&server, &["delete", "node", "b-0"]).ok();
    wait_until(Duration::from_secs(120), "b-0's pods to be gone", || {
        let left: Vec<String> = pods(&server, "web")
            .iter()
            .filter(|p| node_of(p) == "b-0")
            .map(|p| name_of(p).to_string())
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
}

/// Waits until `kubectl get pdb <name>` shows `min` MIN AVAILABLE and `allowed`
/// ALLOWED DISRUPTIONS.
fn wait_budget(server: &Server, name: &str, min: &str, allowed: &str) {
    wait_until(SOON, &format!("budget {name} to allow {allowed}"), || {
        let out = kc(server, &["get", "pdb", name, "--no-headers"]);
        let line = normalize(out.ok());
        let cols: Vec<&str> = line.split(' ').collect();
        (cols.get(1..4) == Some(&[min, "N/A", allowed][..]))
            .then_some(())
            .ok_or(line.clone())
    })
}

/// A budget over `app=<name>` that needs `min` of its pods available.
fn budget(name: &str, min: u32) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"minAvailable": min, "selector": {"matchLabels": {"app": name}}},
    })
}

#[test]
fn cordon_and_evictions_keep_to_the_disruption_budget() {
    let server = Server::start();
    let _sim = Sim::start(&server, &["--count", "3", "--name-prefix", "a-"]);
    wait_ready_nodes(&server, 3);

    // Cordoned: SchedulingDisabled, tainted, and new pods go elsewhere.
    kc(&server, &["cordon", "a-0"]).assert_lines(&["node/a-0 cordoned"]);
    assert_eq!(node_status(&server, "a-0"), "Ready,SchedulingDisabled");
    wait_until(SOON, "a-0 to be tainted unschedulable", || {
        let t = taints(&server, "a-0");
        (t == ["node.kubernetes.io/unschedulable:NoSchedule"])
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
    apply(&server, &deployment("web", 3, json!([])));
    apply(&server, &budget("web", 3));
    let placed = wait_ready_pods(&server, "web", 3, "three Ready pods of web");
    assert!(
        !placed.contains_key("a-0"),
        "a cordoned node got pods: {placed:?}"
    );

    // All 3 needed: no disruption allowed, and the eviction subresource says why.
    wait_budget(&server, "web", "3", "0");
    let pdb = kc(&server, &["get", "pdb", "web", "-o", "json"]).json();
    let status = &pdb["status"];
    assert_eq!(
        [
            &status["currentHealthy"],
            &status["desiredHealthy"],
            &status["expectedPods"],
            &status["observedGeneration"]
        ],
        [
            &json!(3),
            &json!(3),
            &json!(3),
            &pdb["metadata"]["generation"]
        ],
        "{pdb}"
    );
    let cond = &status["conditions"][0];
    assert_eq!(
        [&cond["type"], &cond["status"], &cond["reason"]],
        [
            &json!("DisruptionAllowed"),
            &json!("False"),
            &json!("InsufficientPods")
        ],
        "{pdb}"
    );
    let victim = pods(&server, "web")
        .iter()
        .map(|p| name_of(p).to_string())
        .next()
        .unwrap();
    // Through kubectl, which (like drain) does not retry a refusal by itself.
    let evict = |pod: &str| {
        let body = json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": "default"},
        });
        server.kubectl(KUBECTL).stdin(body.to_string()).run(&[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
            "-f",
            "-",
        ])
    };
    let refused = evict(&victim);
    assert_eq!(
        refused.err().trim(),
        "Error from server (TooManyRequests): Cannot evict pod as it would violate the \
         pod's disruption budget."
    );

    // 2 needed: one may go; the eviction is granted and the pod replaced elsewhere.
    kc(
        &server,
        &[
            "patch",
            "pdb",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":2}}"#,
        ],
    )
    .ok();
    wait_budget(&server, "web", "2", "1");
    let granted = evict(&victim);
    assert_eq!(
        serde_json::from_str::<Value>(granted.ok()).unwrap()["status"],
        "Success",
        "{granted:?}"
    );
    wait_until(SOON, "the evicted pod to be gone", || {
        let left: Vec<String> = pods(&server, "web")
            .iter()
            .map(|p| name_of(p).to_string())
            .collect();
        (!left.contains(&victim))
            .then_some(())
            .ok_or(format!("{left:?}"))
    });
    let placed = wait_ready_pods(&server, "web", 3, "web back to three Ready pods");
    assert!(
        !placed.contains_key("a-0"),
        "a cordoned node got pods: {placed:?}"
    );
    wait_budget(&server, "web", "2", "1");
    let pdb = kc(&server, &["get", "pdb", "web", "-o", "json"]).json();
    let cond = &pdb["status"]["conditions"][0];
    assert_eq!(
        [&cond["status"], &cond["reason"]],
        [&json!("True"), &json!("SufficientPods")],
        "{pdb}"
    );

    // Uncordoned: schedulable and untainted again.
    kc(&server, &["uncordon", "a-0"]).assert_lines(&["node/a-0 uncordoned"]);
    assert_eq!(node_status(&server, "a-0"), "Ready");
    wait_until(SOON, "a-0 to lose its taint", || {
        let t = taints(&server, "a-0");
        t.is_empty().then_some(()).ok_or(format!("{t:?}"))
    });
}

#[test]
fn drain_empties_a_node_within_the_budget() {
    let server = Server::start();
    let _sim = Sim::start(&server, &["--count", "3", "--name-prefix", "a-"]);
    wait_ready_nodes(&server, 3);
    // a-0 cordoned, so that the node drained holds two pods of web and the budget
    // (one disruption at a time) makes drain wait for a replacement in between.
    kc(&server, &["cordon", "a-0"]).ok();
    apply(&server, &deployment("web", 3, json!([])));
    apply(&server, &budget("web", 2));
    let placed = wait_ready_pods(&server, "web", 3, "three Ready pods of web");
    wait_budget(&server, "web", "2", "1");
    let busy = placed
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(n, _)| n.clone())
        .unwrap();
    let spare = ["a-1", "a-2"].into_iter().find(|n| *n != busy).unwrap();
    let drained = kc(
        &server,
        &[
            "drain",
            &busy,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    );
    assert!(
        drained.ok().contains(&format!("node/{busy} drained")),
        "{drained:?}"
    );
    // Any eviction refused on the way was refused for the budget, and retried.
    for line in drained.stderr.lines().filter(|l| l.contains("evicting")) {
        assert!(
            line.contains("Cannot evict pod as it would violate the pod's disruption budget."),
            "{drained:?}"
        );
    }
    assert_eq!(node_status(&server, &busy), "Ready,SchedulingDisabled");
    let placed = wait_ready_pods(&server, "web", 3, "web back to three Ready pods");
    assert_eq!(
        placed,
        BTreeMap::from([(spare.to_string(), 3)]),
        "pods after draining {busy}"
    );
    wait_budget(&server, "web", "2", "1");
}
