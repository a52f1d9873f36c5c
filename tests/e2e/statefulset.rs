//! StatefulSets on simulated nodes: ordered creation (each pod only after the one before
//! is Running and Ready), a claim per pod from the claim template, `kubectl rollout
//! status`, a partitioned rolling update, and a scale-down from the highest ordinal.

use crate::harness::{normalize, wait_until, Kubectl, Server};
use crate::sim::Sim;
use std::time::Duration;

/// Generous for a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, name: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{containerPort: 80, name: http}]
        volumeMounts: [{name: data, mountPath: /usr/share/nginx/html}]
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
"#;

/// A `kubectl get -w --output-watch-events` line as (event, pod, ready, status).
fn fields(line: &str) -> Option<(&str, &str, &str, &str)> {
    let f: Vec<&str> = line.split(' ').collect();
    (f.len() >= 4).then(|| (f[0], f[1], f[2], f[3]))
}

/// The index of the first line about `pod` that satisfies `pred` (event, ready, status).
fn first(lines: &[String], pod: &str, pred: impl Fn(&str, &str, &str) -> bool) -> Option<usize> {
    lines.iter().position(|l| {
        fields(l)
            .is_some_and(|(event, name, ready, status)| name == pod && pred(event, ready, status))
    })
}

fn running_ready(_: &str, ready: &str, status: &str) -> bool {
    ready == "1/1" && status == "Running"
}

fn any(_: &str, _: &str, _: &str) -> bool {
    true
}

#[test]
fn ordered_pods_claims_rollout_and_partitioned_update() {
    let server = Server::start();
    let _sim = Sim::start(&server, &["--count", "2"]);
    let kubectl = || server.kubectl(Kubectl::V132);

    // A watch of every pod, known to be running before anything is applied.
    let mut watch = kubectl().spawn(&["get", "pods", "-w", "--output-watch-events"]);
    kubectl()
        .stdin(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sentinel"},
                "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#,
        )
        .run(&["create", "-f", "-"])
        .ok();
    watch.wait_for_line(SOON, |l| l.starts_with("ADDED sentinel "));

    kubectl().stdin(MANIFEST).run(&["apply", "-f", "-"]).ok();
    watch.wait_for_line(SOON, |l| {
        fields(l).is_some_and(|(_, n, r, s)| n == "web-2" && running_ready("", r, s))
    });

    // web-1 appeared only once web-0 was Running and Ready, web-2 only after web-1.
    let seen = watch.seen().to_vec();
    for (before, after) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let ready = first(&seen, before, running_ready)
            .unwrap_or_else(|| panic!("{before} never ready: {seen:#?}"));
        let born = first(&seen, after, any).unwrap();
        assert!(
            ready < born,
            "{after} was created before {before} was ready: {seen:#?}"
        );
    }

    // Stable identity, the claim as a volume, the set as controller.
    let identity = kubectl()
        .run(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.spec.hostname} {.spec.subdomain} \
             {.metadata.labels.statefulset\\.kubernetes\\.io/pod-name} \
             {.metadata.labels.apps\\.kubernetes\\.io/pod-index} \
             {.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName} \
             {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} \
             {.metadata.ownerReferences[0].controller}",
        ])
        .ok()
        .to_string();
    assert_eq!(
        normalize(&identity),
        "web-1 web web-1 1 data-web-1 StatefulSet/web true"
    );

    // One claim per pod, labelled with the selector.
    kubectl()
        .run(&[
            "get",
            "pvc",
            "-o",
            "custom-columns=NAME:.metadata.name,APP:.metadata.labels.app,\
             SIZE:.spec.resources.requests.storage",
            "--sort-by=.metadata.name",
        ])
        .assert_lines(&[
            "NAME APP SIZE",
            "data-web-0 web 1Gi",
            "data-web-1 web 1Gi",
            "data-web-2 web 1Gi",
        ]);

    // kubectl sees the rollout done and the set ready.
    let out = kubectl().run(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        out.ok()
            .contains("partitioned roll out complete: 3 new pods have been updated..."),
        "{out:?}"
    );
    wait_until(SOON, "READY 3/3", || {
        let line = normalize(kubectl().run(&["get", "sts", "web", "--no-headers"]).ok());
        line.starts_with("web 3/3 ").then_some(()).ok_or(line)
    });

    // Upstream's Events.
    let events = kubectl()
        .run(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=StatefulSet,involvedObject.name=web",
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ])
        .ok()
        .to_string();
    for line in [
        "SuccessfulCreate create Claim data-web-0 Pod web-0 in StatefulSet web success",
        "SuccessfulCreate create Pod web-0 in StatefulSet web successful",
        "SuccessfulCreate create Pod web-2 in StatefulSet web successful",
    ] {
        assert!(
            events.lines().any(|l| normalize(l) == line),
            "no {line:?} in {events}"
        );
    }

    // A partitioned update: only web-2 (at or above the partition) moves.
    kubectl()
        .run(&[
            "patch",
            "sts",
            "web",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
        ])
        .ok();
    kubectl()
        .run(&["set", "image", "sts/web", "nginx=nginx:1.28"])
        .ok();
    let out = kubectl().run(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        out.ok()
            .contains("partitioned roll out complete: 1 new pods have been updated..."),
        "{out:?}"
    );
    let revisions = kubectl()
        .run(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.status.currentRevision} {.status.updateRevision}",
        ])
        .ok()
        .to_string();
    let (current, update) = revisions.split_once(' ').unwrap();
    assert_ne!(current, update);
    kubectl()
        .run(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "custom-columns=NAME:.metadata.name,IMAGE:.spec.containers[0].image,\
             REVISION:.metadata.labels.controller-revision-hash",
            "--sort-by=.metadata.name",
        ])
        .assert_lines(&[
            "NAME IMAGE REVISION",
            &format!("web-0 nginx:1.27 {current}"),
            &format!("web-1 nginx:1.27 {current}"),
            &format!("web-2 nginx:1.28 {update}"),
        ]);
    kubectl()
        .run(&[
            "get",
            "controllerrevisions",
            "-o",
            "custom-columns=NAME:.metadata.name,REVISION:.revision",
            "--sort-by=.revision",
        ])
        .assert_lines(&[
            "NAME REVISION",
            &format!("{current} 1"),
            &format!("{update} 2"),
        ]);

    // Scale down: web-2 goes first and is gone before web-1 starts terminating.
    kubectl().run(&["scale", "sts", "web", "--replicas=1"]).ok();
    watch.wait_for_line(SOON, |l| l.starts_with("DELETED web-1 "));
    let seen = watch.seen().to_vec();
    assert!(
        first(&seen, "web-0", |e, _, _| e == "DELETED").is_none(),
        "web-0 was deleted: {seen:#?}"
    );
    let gone2 = first(&seen, "web-2", |e, _, _| e == "DELETED").unwrap();
    let going1 = first(&seen, "web-1", |_, _, s| s == "Terminating")
        .or_else(|| first(&seen, "web-1", |e, _, _| e == "DELETED"))
        .unwrap();
    assert!(gone2 < going1, "web-1 went before web-2: {seen:#?}");
    // Only the updated web-2 was ever replaced (it was deleted twice: update, scale).
    let deleted: Vec<&String> = seen.iter().filter(|l| l.starts_with("DELETED ")).collect();
    assert_eq!(deleted.len(), 3, "{deleted:#?}");
    // The claims stay (Retain).
    let claims = kubectl().run(&["get", "pvc", "-o", "name"]);
    claims.assert_lines(&[
        "persistentvolumeclaim/data-web-0",
        "persistentvolumeclaim/data-web-1",
        "persistentvolumeclaim/data-web-2",
    ]);
    wait_until(SOON, "READY 1/1", || {
        let line = normalize(kubectl().run(&["get", "sts", "web", "--no-headers"]).ok());
        line.starts_with("web 1/1 ").then_some(()).ok_or(line)
    });
}
