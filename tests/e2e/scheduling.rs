//! The scheduler's placement decisions and messages on simulated nodes, as a kubectl user
//! sees them.
//!
//! * A pod too big for every node stays Pending with upstream's FailedScheduling message
//!   and `PodScheduled=False/Unschedulable`, and is placed once a big enough node joins.
//! * Taints keep pods without the toleration off a node; a pod that tolerates the taint
//!   and selects the node lands there; one that selects it without tolerating it says why.
//! * A nodeSelector on a label only one node has puts every replica there.
//! * Required pod anti-affinity on the hostname spreads three replicas over three nodes;
//!   a fourth stays Pending and says it did not match the anti-affinity rules.
//! * Preemption: with the nodes full of pods of a low PriorityClass, a pod of a high one
//!   has one victim deleted (with a `Preempted` event naming it and the node), runs where
//!   the victim was, and keeps that room from the victim's replacement.

use crate::harness::{normalized_lines, wait_until, Kubectl, Output, Server};
use crate::sim::Sim;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// Convergence on a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);
/// The kubectl these tests run (the kubectl tier covers both versions).
const KUBECTL: Kubectl = Kubectl::V132;

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
        let lines = normalized_lines(out.ok());
        let ready = lines
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some("Ready"))
            .count();
        (ready == n && lines.len() == n)
            .then_some(())
            .ok_or(out.stdout.clone())
    });
}

/// `kubectl get pod <name> -o jsonpath=<path>`.
fn pod_field(server: &Server, name: &str, path: &str) -> String {
    kc(
        server,
        &["get", "pod", name, "-o", &format!("jsonpath={path}")],
    )
    .ok()
    .to_string()
}

/// The PodScheduled condition of a pod as `status/reason/message`.
fn scheduled_condition(server: &Server, name: &str) -> String {
    pod_field(
        server,
        name,
        r#"{.status.conditions[?(@.type=="PodScheduled")].status}/{.status.conditions[?(@.type=="PodScheduled")].reason}/{.status.conditions[?(@.type=="PodScheduled")].message}"#,
    )
}

/// Waits until the pod runs, and returns its node.
fn wait_running(server: &Server, name: &str) -> String {
    wait_until(SOON, &format!("pod {name} Running"), || {
        let got = pod_field(server, name, "{.status.phase} {.spec.nodeName}");
        match got.split_once(' ') {
            Some(("Running", node)) if !node.is_empty() => Ok(node.to_string()),
            _ => Err(got),
        }
    })
}

/// The pods with `selector` as (name, phase, node), sorted by name.
fn pods(server: &Server, selector: &str) -> Vec<(String, String, String)> {
    let list = kc(server, &["get", "pods", "-l", selector, "-o", "json"]).json();
    let mut out: Vec<(String, String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&p["metadata"]["name"]),
                s(&p["status"]["phase"]),
                s(&p["spec"]["nodeName"]),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until `want` pods with `selector` run, and returns their nodes.
fn wait_running_pods(server: &Server, selector: &str, want: usize) -> Vec<String> {
    wait_until(SOON, &format!("{want} pods {selector} Running"), || {
        let all = pods(server, selector);
        let running: Vec<String> = all
            .iter()
            .filter(|(_, phase, node)| phase == "Running" && !node.is_empty())
            .map(|(_, _, node)| node.clone())
            .collect();
        (running.len() == want && all.len() == want)
            .then_some(running)
            .ok_or(format!("{all:?}"))
    })
}

/// The `Warning FailedScheduling` line of `kubectl describe pod`, once it says `message`.
fn wait_failed_scheduling(server: &Server, name: &str, message: &str) -> String {
    wait_until(SOON, &format!("FailedScheduling of {name}"), || {
        let out = kc(server, &["describe", "pod", name]);
        normalized_lines(out.ok())
            .into_iter()
            .find(|l| {
                l.starts_with("Warning FailedScheduling")
                    && l.ends_with(&format!("default-scheduler {message}"))
            })
            .ok_or(out.stdout.clone())
    })
}

fn pod(name: &str, cpu: &str, spec: Value) -> Value {
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [{
                "name": "app",
                "image": "nginx:1.27",
                "resources": {"requests": {"cpu": cpu}},
            }],
        },
    });
    if let (Some(into), Some(from)) = (doc["spec"].as_object_mut(), spec.as_object()) {
        into.extend(from.clone());
    }
    doc
}

fn deployment(name: &str, replicas: u32, cpu: &str, spec: Value) -> Value {
    let mut template = pod(name, cpu, spec);
    template["metadata"] = json!({"labels": {"app": name}});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    })
}

#[test]
fn a_pod_too_big_for_every_node_waits_for_one_big_enough() {
    let server = Server::start();
    let _small = Sim::start(&server, &["--count", "3", "--cpu", "2", "--memory", "4Gi"]);
    wait_ready_nodes(&server, 3);
    apply(&server, &pod("huge", "100", json!({})));

    let message = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are \
                   available: 3 No preemption victims found for incoming pod.";
    wait_failed_scheduling(&server, "huge", message);
    assert_eq!(
        scheduled_condition(&server, "huge"),
        format!("False/Unschedulable/{message}")
    );
    assert_eq!(pod_field(&server, "huge", "{.status.phase}"), "Pending");

    let _big = Sim::start(
        &server,
        &["--count", "1", "--name-prefix", "big-", "--cpu", "200"],
    );
    assert_eq!(wait_running(&server, "huge"), "big-0");
    let out = kc(&server, &["describe", "pod", "huge"]);
    assert!(
        normalized_lines(out.ok())
            .iter()
            .any(|l| l.starts_with("Normal Scheduled")
                && l.ends_with("default-scheduler Successfully assigned default/huge to big-0")),
        "{out:?}"
    );
    assert_eq!(scheduled_condition(&server, "huge"), "True//");
}

#[test]
fn taints_keep_pods_away_unless_tolerated() {
    let server = Server::start();
    let _sim = Sim::start(&server, &["--count", "3", "--cpu", "4"]);
    wait_ready_nodes(&server, 3);
    kc(
        &server,
        &["taint", "node", "sim-0", "dedicated=db:NoSchedule"],
    )
    .assert_lines(&["node/sim-0 tainted"]);

    apply(&server, &deployment("web", 6, "100m", json!({})));
    let nodes = wait_running_pods(&server, "app=web", 6);
    assert!(
        nodes.iter().all(|n| n != "sim-0"),
        "a pod without the toleration landed on the tainted node: {nodes:?}"
    );

    let on_sim_0 = json!({"nodeSelector": {"kubernetes.io/hostname": "sim-0"}});
    let mut tolerating = on_sim_0.clone();
    tolerating["tolerations"] = json!([
        {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
    ]);
    apply(&server, &pod("db", "100m", tolerating));
    assert_eq!(wait_running(&server, "db"), "sim-0");

    apply(&server, &pod("intruder", "100m", on_sim_0));
    let message = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, \
                   2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes \
                   are available: 3 Preemption is not helpful for scheduling.";
    wait_failed_scheduling(&server, "intruder", message);
    assert_eq!(
        scheduled_condition(&server, "intruder"),
        format!("False/Unschedulable/{message}")
    );
}

#[test]
fn a_node_selector_picks_the_only_node_with_the_label() {
    let server = Server::start();
    let _plain = Sim::start(&server, &["--count", "2"]);
    let _ssd = Sim::start(
        &server,
        &[
            "--count",
            "1",
            "--name-prefix",
            "ssd-",
            "--label",
            "disk=ssd",
        ],
    );
    wait_ready_nodes(&server, 3);
    kc(&server, &["get", "nodes", "-l", "disk=ssd", "-o", "name"]).assert_lines(&["node/ssd-0"]);
    apply(
        &server,
        &deployment("fast", 3, "100m", json!({"nodeSelector": {"disk": "ssd"}})),
    );
    let nodes = wait_running_pods(&server, "app=fast", 3);
    assert_eq!(nodes, ["ssd-0", "ssd-0", "ssd-0"]);
}

#[test]
fn required_anti_affinity_puts_one_replica_per_node() {
    let server = Server::start();
    let _sim = Sim::start(&server, &["--count", "3"]);
    wait_ready_nodes(&server, 3);
    let anti = json!({"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "db"}},
            "topologyKey": "kubernetes.io/hostname",
        }],
    }}});
    apply(&server, &deployment("db", 3, "100m", anti));
    let nodes: BTreeSet<String> = wait_running_pods(&server, "app=db", 3)
        .into_iter()
        .collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["sim-0".into(), "sim-1".into(), "sim-2".into()])
    );

    kc(&server, &["scale", "deployment", "db", "--replicas=4"]).ok();
    let pending = wait_until(SOON, "a fourth replica, Pending", || {
        let all = pods(&server, "app=db");
        all.iter()
            .find(|(_, phase, node)| phase == "Pending" && node.is_empty())
            .map(|(name, _, _)| name.clone())
            .ok_or(format!("{all:?}"))
    });
    let message = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
                   preemption: 0/3 nodes are available: 3 No preemption victims found for \
                   incoming pod.";
    let line = wait_failed_scheduling(&server, &pending, message);
    assert!(
        line.contains("didn't match pod anti-affinity rules"),
        "{line}"
    );
    assert_eq!(running_count(&server, "app=db"), 3);
}

/// How many pods with `selector` run now.
fn running_count(server: &Server, selector: &str) -> usize {
    pods(server, selector)
        .iter()
        .filter(|(_, phase, _)| phase == "Running")
        .count()
}

#[test]
fn a_pod_of_a_higher_priority_class_preempts_one_victim() {
    let server = Server::start();
    let _sim = Sim::start(&server, &["--count", "2", "--cpu", "2"]);
    wait_ready_nodes(&server, 2);
    for (name, value) in [("low", 100), ("high", 1_000_000)] {
        apply(
            &server,
            &json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
            }),
        );
    }
    apply(
        &server,
        &deployment("filler", 4, "1", json!({"priorityClassName": "low"})),
    );
    wait_running_pods(&server, "app=filler", 4);
    let before: BTreeSet<String> = pods(&server, "app=filler")
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();

    apply(
        &server,
        &pod("vip", "1", json!({"priorityClassName": "high"})),
    );
    let node = wait_running(&server, "vip");
    let uid = pod_field(&server, "vip", "{.metadata.uid}");
    // Admission resolved the class into the pod, as upstream's Priority plugin does.
    assert_eq!(pod_field(&server, "vip", "{.spec.priority}"), "1000000");
    assert_eq!(
        pod_field(&server, "vip", "{.spec.preemptionPolicy}"),
        "PreemptLowerPriority"
    );
    let refused = server
        .kubectl(KUBECTL)
        .stdin(pod("stray", "1", json!({"priorityClassName": "nope"})).to_string())
        .run(&["apply", "-f", "-"]);
    assert!(
        refused
            .err()
            .contains("pods \"stray\" is forbidden: no PriorityClass with name nope was found"),
        "{refused:?}"
    );
    let critical = kc(
        &server,
        &[
            "get",
            "priorityclass",
            "system-node-critical",
            "-o",
            "jsonpath={.value}",
        ],
    );
    assert_eq!(critical.ok(), "2000001000");

    // Exactly one victim, a filler pod, with upstream's event.
    let events = wait_until(SOON, "a Preempted event", || {
        let out = kc(
            &server,
            &[
                "get",
                "events",
                "--field-selector",
                "reason=Preempted",
                "-o",
                "json",
            ],
        );
        let items = out.json()["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty())
            .then_some(items)
            .ok_or(out.stdout.clone())
    });
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev["type"], "Normal");
    assert_eq!(
        ev["message"].as_str().unwrap(),
        format!("Preempted by pod {uid} on node {node}")
    );
    let victim = ev["involvedObject"]["name"].as_str().unwrap().to_string();
    assert!(before.contains(&victim), "{victim} is not a filler pod");
    assert_eq!(ev["involvedObject"]["kind"], "Pod");

    // The victim is gone; its replacement waits, the room kept for the preemptor.
    wait_until(SOON, "the victim to go", || {
        let now = pods(&server, "app=filler");
        (!now.iter().any(|(name, _, _)| *name == victim))
            .then_some(())
            .ok_or(format!("{now:?}"))
    });
    let replacement = wait_until(SOON, "the victim's replacement, Pending", || {
        let now = pods(&server, "app=filler");
        now.iter()
            .find(|(name, phase, _)| !before.contains(name) && phase == "Pending")
            .map(|(name, _, _)| name.clone())
            .ok_or(format!("{now:?}"))
    });
    let message = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are \
                   available: 2 No preemption victims found for incoming pod.";
    wait_failed_scheduling(&server, &replacement, message);
    assert_eq!(running_count(&server, "app=filler"), 3);
    assert_eq!(pod_field(&server, "vip", "{.spec.nodeName}"), node);

    // The preemptor's own story: it did not fit, then it was placed.
    let out = kc(&server, &["describe", "pod", "vip"]);
    let lines = normalized_lines(out.ok());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Warning FailedScheduling")
                && l.ends_with("default-scheduler 0/2 nodes are available: 2 Insufficient cpu.")),
        "{out:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Normal Scheduled")
            && l.ends_with(&format!("Successfully assigned default/vip to {node}"))),
        "{out:?}"
    );
}
