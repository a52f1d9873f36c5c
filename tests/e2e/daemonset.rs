//! DaemonSets on simulated nodes: one pod per node as nodes join and leave, a rolling
//! update that `kubectl rollout status` follows, and a NoExecute taint that removes the
//! pod of a node.

use crate::harness::{normalize, wait_until, Kubectl, Server};
use crate::sim::Sim;
use std::time::Duration;

/// Generous for a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: example.com/agent:1
"#;

/// `kubectl get ds agent`: DESIRED CURRENT READY UP-TO-DATE AVAILABLE.
fn counts(server: &Server) -> String {
    let out = server
        .kubectl(Kubectl::V132)
        .run(&["get", "ds", "agent", "--no-headers"]);
    let line = normalize(out.ok());
    line.split(' ')
        .skip(1)
        .take(5)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The DaemonSet's pods as "node image phase", sorted; pods being deleted say so.
fn pods(server: &Server) -> Vec<String> {
    let out = server.kubectl(Kubectl::V132).run(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.spec.containers[0].image} \
         {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    let mut lines: Vec<String> = out.ok().lines().map(normalize).collect();
    lines.retain(|l| !l.is_empty());
    lines.sort();
    lines
}

/// Waits until `kubectl get ds` shows `want` and the pods are exactly `want_pods`.
fn wait_for(server: &Server, want: &str, want_pods: &[&str]) {
    wait_until(
        SOON,
        &format!("ds agent {want} with pods {want_pods:?}"),
        || {
            let (c, p) = (counts(server), pods(server));
            (c == want && p == want_pods)
                .then_some(())
                .ok_or(format!("{c} / {p:?}"))
        },
    );
}

#[test]
fn daemonset_follows_nodes_and_rolls_out() {
    let server = Server::start();
    let _first = Sim::start(&server, &["--count", "2", "--name-prefix", "a-"]);
    let kubectl = || server.kubectl(Kubectl::V132);
    kubectl().stdin(DAEMONSET).run(&["apply", "-f", "-"]).ok();

    // One Running pod per node.
    wait_for(
        &server,
        "2 2 2 2 2",
        &[
            "a-0 example.com/agent:1 Running",
            "a-1 example.com/agent:1 Running",
        ],
    );
    // Owned by the DaemonSet, labelled with the revision it was made from.
    let pod = kubectl()
        .run(&["get", "pods", "-l", "app=agent", "-o", "json"])
        .json()["items"][0]
        .clone();
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "DaemonSet", "{pod}");
    assert_eq!(owner["controller"], true, "{pod}");
    let hash = pod["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!hash.is_empty(), "{pod}");
    assert_eq!(pod["metadata"]["labels"]["pod-template-generation"], "1");
    kubectl()
        .run(&["get", "controllerrevisions", "-o", "name"])
        .assert_lines(&[&format!("controllerrevision.apps/agent-{hash}")]);
    let events = kubectl().run(&["get", "events", "-o", "json"]).json();
    let created: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == "DaemonSet" && e["reason"] == "SuccessfulCreate")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(created.len(), 2, "{events}");
    assert!(
        created.iter().all(|m| m.starts_with("Created pod: agent-")),
        "{created:?}"
    );

    // A node joins: it gets a pod.
    let _second = Sim::start(&server, &["--count", "1", "--name-prefix", "b-"]);
    wait_for(
        &server,
        "3 3 3 3 3",
        &[
            "a-0 example.com/agent:1 Running",
            "a-1 example.com/agent:1 Running",
            "b-0 example.com/agent:1 Running",
        ],
    );

    // A node leaves: its pod goes.
    kubectl().run(&["delete", "node", "b-0"]).ok();
    wait_for(
        &server,
        "2 2 2 2 2",
        &[
            "a-0 example.com/agent:1 Running",
            "a-1 example.com/agent:1 Running",
        ],
    );

    // A new image rolls over node by node, and rollout status follows it to the end.
    kubectl()
        .run(&["set", "image", "ds/agent", "agent=example.com/agent:2"])
        .ok();
    let out = kubectl().run(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(
        out.ok()
            .contains("daemon set \"agent\" successfully rolled out"),
        "{out:?}"
    );
    wait_for(
        &server,
        "2 2 2 2 2",
        &[
            "a-0 example.com/agent:2 Running",
            "a-1 example.com/agent:2 Running",
        ],
    );
    kubectl()
        .run(&["rollout", "history", "ds/agent"])
        .assert_lines(&[
            "daemonset.apps/agent",
            "REVISION CHANGE-CAUSE",
            "1 <none>",
            "2 <none>",
        ]);
    let generation = kubectl().run(&[
        "get",
        "ds",
        "agent",
        "-o",
        "jsonpath={.metadata.annotations.deprecated\\.daemonset\\.template\\.generation}",
    ]);
    assert_eq!(generation.ok(), "2");

    // A NoExecute taint the pod does not tolerate takes it off the node.
    kubectl()
        .run(&["taint", "node", "a-1", "dedicated=infra:NoExecute"])
        .ok();
    wait_for(&server, "1 1 1 1 1", &["a-0 example.com/agent:2 Running"]);
}
