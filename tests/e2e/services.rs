//! Endpoints, EndpointSlices, default ServiceAccounts and ResourceQuota usage.

use crate::harness::{normalized_lines, wait_until, Kubectl, Server};
use crate::sim::Sim;
use serde_json::Value;
use std::time::Duration;

/// Generous for a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports:
        - {name: http, containerPort: 8080}
        resources:
          requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: front}
spec:
  selector: {app: web}
  ports:
  - {name: web, port: 80, targetPort: http}
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: compute
spec:
  hard:
    pods: "10"
    requests.cpu: "1"
    requests.memory: 1Gi
    services: "5"
    count/deployments.apps: "2"
"#;

/// The addresses `kubectl get endpoints web` lists.
fn endpoints(server: &Server) -> Vec<String> {
    let out = server
        .kubectl(Kubectl::V132)
        .run(&["get", "endpoints", "web", "--no-headers"]);
    if !out.status.success() {
        return Vec::new();
    }
    let line = normalized_lines(&out.stdout).join(" ");
    match line.split(' ').nth(1) {
        None | Some("<none>") => Vec::new(),
        Some(list) => list.split(',').map(String::from).collect(),
    }
}

fn wait_for_endpoints(server: &Server, n: usize) -> Vec<String> {
    wait_until(SOON, &format!("{n} endpoints of web"), || {
        let got = endpoints(server);
        (got.len() == n)
            .then(|| got.clone())
            .ok_or(format!("{got:?}"))
    })
}

/// The web Service's slices.
fn slices(server: &Server) -> Vec<Value> {
    let list = server
        .kubectl(Kubectl::V132)
        .run(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "json",
        ])
        .json();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// How many endpoints of the web Service's slices are ready.
fn ready_in_slices(server: &Server) -> usize {
    slices(server)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count()
}

fn wait_for_quota(server: &Server, lines: &[&str]) {
    wait_until(SOON, &format!("quota usage {lines:?}"), || {
        let out = server
            .kubectl(Kubectl::V132)
            .run(&["describe", "quota", "compute"]);
        let got = normalized_lines(out.ok());
        lines
            .iter()
            .all(|l| got.iter().any(|g| g == l))
            .then_some(())
            .ok_or(out.stdout.clone())
    });
}

#[test]
fn endpoints_slices_and_quota_usage_follow_the_pods_of_a_service() {
    let server = Server::start();
    let _sim = Sim::start(&server, &["--count", "2", "--cpu", "4", "--memory", "8Gi"]);
    server
        .kubectl(Kubectl::V132)
        .stdin(APP)
        .run(&["apply", "-f", "-"])
        .ok();

    // Three ready pods: three addresses, each on the container port named by the
    // Service's targetPort.
    let listed = wait_for_endpoints(&server, 3);
    for addr in &listed {
        assert!(
            addr.starts_with("10.") && addr.ends_with(":8080"),
            "{listed:?}"
        );
    }
    let ep = server
        .kubectl(Kubectl::V132)
        .run(&["get", "endpoints", "web", "-o", "json"])
        .json();
    assert_eq!(ep["metadata"]["labels"]["tier"], "front", "{ep:#}");
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "web", "{ep:#}");
    assert_eq!(ep["subsets"][0]["addresses"][0]["targetRef"]["kind"], "Pod");

    wait_until(SOON, "three ready endpoints in the slices", || {
        let n = ready_in_slices(&server);
        (n == 3).then_some(()).ok_or(format!("{n} ready"))
    });
    let all = slices(&server);
    assert_eq!(all.len(), 1, "{all:#?}");
    let slice = &all[0];
    let name = slice["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("web-") && name.len() == "web-".len() + 5,
        "{name}"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["labels"]["tier"], "front");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(slice["ports"][0]["port"], 8080);
    let first = &slice["endpoints"][0];
    assert!(
        first["nodeName"].as_str().unwrap().starts_with("sim-"),
        "{first:#}"
    );
    assert_eq!(first["targetRef"]["kind"], "Pod");

    // Usage as `kubectl describe quota` shows it (the `kubernetes` Service counts too).
    wait_for_quota(
        &server,
        &[
            "Resource Used Hard",
            "count/deployments.apps 1 2",
            "pods 3 10",
            "requests.cpu 300m 1",
            "requests.memory 192Mi 1Gi",
            "services 2 5",
        ],
    );

    // Scaled to one: one address, the same slice updated in place.
    server
        .kubectl(Kubectl::V132)
        .run(&["scale", "deployment", "web", "--replicas=1"])
        .ok();
    wait_for_endpoints(&server, 1);
    wait_until(SOON, "one endpoint in the slice", || {
        let all = slices(&server);
        let n: usize = all
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .sum();
        (n == 1 && ready_in_slices(&server) == 1)
            .then_some(())
            .ok_or(format!("{all:#?}"))
    });
    let after = slices(&server);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["metadata"]["name"], name, "updated, not recreated");
    wait_for_quota(&server, &["pods 1 10", "requests.cpu 100m 1"]);

    // The Service goes: so do its Endpoints and (through the owner) its slices.
    server
        .kubectl(Kubectl::V132)
        .run(&["delete", "service", "web"])
        .ok();
    wait_until(SOON, "the Endpoints and slices of web to go", || {
        let ep = server
            .kubectl(Kubectl::V132)
            .run(&["get", "endpoints", "web"]);
        let left = slices(&server).len();
        (!ep.status.success() && left == 0)
            .then_some(())
            .ok_or(format!("{}{left} slices", ep.stdout))
    });
}

#[test]
fn every_namespace_has_a_default_service_account() {
    let server = Server::start();
    server
        .kubectl(Kubectl::V132)
        .run(&["create", "namespace", "x"])
        .ok();
    let uid = || {
        let out = server.kubectl(Kubectl::V132).run(&[
            "get",
            "sa",
            "default",
            "-n",
            "x",
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        if out.status.success() && !out.stdout.is_empty() {
            Ok(out.stdout.clone())
        } else {
            Err(out.stderr.clone())
        }
    };
    let first = wait_until(SOON, "the default ServiceAccount of x", uid);
    let listed = server
        .kubectl(Kubectl::V132)
        .run(&["get", "sa", "-n", "x", "--no-headers"]);
    let names: Vec<String> = normalized_lines(listed.ok())
        .iter()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["default"]);
    server
        .kubectl(Kubectl::V132)
        .run(&["get", "sa", "default", "-n", "kube-system"])
        .ok();

    // Deleted, it comes back (a new one).
    server
        .kubectl(Kubectl::V132)
        .run(&["delete", "sa", "default", "-n", "x"])
        .ok();
    wait_until(SOON, "a new default ServiceAccount in x", || {
        let now = uid()?;
        (now != first).then_some(()).ok_or(now)
    });
}

#[test]
fn the_kubernetes_endpoints_follow_the_advertised_address() {
    let mut server = Server::start_with(&["--advertise-address", "10.213.9.1"]);
    let addresses = |server: &Server| {
        let ep = server
            .kubectl(Kubectl::V132)
            .run(&["get", "endpoints", "kubernetes", "-o", "json"])
            .json();
        let slice = server
            .kubectl(Kubectl::V132)
            .run(&["get", "endpointslice", "kubernetes", "-o", "json"])
            .json();
        (
            ep["subsets"][0]["addresses"][0]["ip"].clone(),
            slice["endpoints"][0]["addresses"][0].clone(),
        )
    };
    assert_eq!(
        addresses(&server),
        ("10.213.9.1".into(), "10.213.9.1".into())
    );
    // A label added by a user survives the restart.
    server
        .kubectl(Kubectl::V132)
        .run(&["label", "endpoints", "kubernetes", "team=infra"])
        .ok();

    // Restarted with another address, the server rewrites both.
    let flags = server.extra_flags();
    flags.retain(|f| f != "10.213.9.1");
    flags.push("10.213.9.2".into());
    server.restart();
    assert_eq!(
        addresses(&server),
        ("10.213.9.2".into(), "10.213.9.2".into())
    );
    let labels = server.kubectl(Kubectl::V132).run(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.metadata.labels.team}",
    ]);
    assert_eq!(labels.ok(), "infra");
}
