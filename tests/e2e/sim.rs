//! `skiff sim-nodes`: simulated nodes register Ready with their capacity, keep their
//! Leases renewed, run the pods bound to them (a Job's pod to completion), finish
//! graceful deletions, and stay registered when the simulator stops.

use crate::harness::{normalize, wait_until, Kubectl, Server};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Generous for a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);
/// Leases are renewed every 10 s: a renewal must show within two rounds and a bit.
const RENEWAL: Duration = Duration::from_secs(30);

/// The simulator process; killed when dropped, its log kept in the test directory.
pub struct Sim {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Sim {
    /// Starts `skiff sim-nodes` against `server` with `args`.
    pub fn start(server: &Server, args: &[&str]) -> Sim {
        let log = server.dir().join("sim.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("sim-nodes")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting skiff sim-nodes");
        Sim {
            child: Some(child),
            log,
        }
    }

    /// What the simulator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the simulator with SIGTERM and asserts it exits cleanly.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the simulator is running");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let status = wait_until(SOON, "the simulator to exit", || {
            child
                .try_wait()
                .unwrap()
                .ok_or_else(|| "still running".to_string())
        });
        assert!(
            status.success(),
            "sim-nodes exited with {status}: {}",
            self.log()
        );
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- sim-nodes log -----\n{}", self.log());
        }
    }
}

/// `kubectl get pods` lines as (name, ready, status).
fn pods(server: &Server) -> Vec<(String, String, String)> {
    let out = server
        .kubectl(Kubectl::V132)
        .run(&["get", "pods", "--no-headers"]);
    out.ok()
        .lines()
        .map(normalize)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn wait_for_pod(server: &Server, name: &str, ready: &str, status: &str) {
    wait_until(SOON, &format!("pod {name} {ready} {status}"), || {
        let all = pods(server);
        all.iter()
            .any(|(n, r, s)| n == name && r == ready && s == status)
            .then_some(())
            .ok_or_else(|| format!("{all:?}"))
    });
}

fn renew_time(server: &Server, node: &str) -> String {
    server
        .kubectl(Kubectl::V132)
        .run(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            node,
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseDurationSeconds} {.spec.renewTime}",
        ])
        .ok()
        .to_string()
}

#[test]
fn simulated_nodes_register_run_pods_and_renew_leases() {
    let server = Server::start();
    let mut sim = Sim::start(
        &server,
        &[
            "--count",
            "3",
            "--name-prefix",
            "sim-",
            "--cpu",
            "2",
            "--memory",
            "4Gi",
            "--pods",
            "50",
            "--label",
            "zone=test",
            "--job-duration",
            "1",
        ],
    );

    // Registered and Ready, with the capacity asked for.
    wait_until(SOON, "three Ready simulated nodes", || {
        let out = server.kubectl(Kubectl::V132).run(&[
            "get",
            "nodes",
            "--no-headers",
            "-l",
            "type=sim,zone=test",
        ]);
        let ready: Vec<String> = out
            .ok()
            .lines()
            .map(normalize)
            .filter(|l| l.split(' ').nth(1) == Some("Ready"))
            .collect();
        (ready.len() == 3).then_some(()).ok_or(out.stdout.clone())
    });
    let out = server.kubectl(Kubectl::V132).run(&[
        "get",
        "nodes",
        "-o",
        "custom-columns=NAME:.metadata.name,CPU:.status.capacity.cpu,MEM:.status.capacity.memory,\
         PODS:.status.allocatable.pods,IP:.status.addresses[0].address,\
         RUNTIME:.status.nodeInfo.containerRuntimeVersion,OS:.metadata.labels.kubernetes\\.io/os",
        "--sort-by=.metadata.name",
    ]);
    out.assert_lines(&[
        "NAME CPU MEM PODS IP RUNTIME OS",
        "sim-0 2 4Gi 50 10.99.0.1 sim:// linux",
        "sim-1 2 4Gi 50 10.99.0.2 sim:// linux",
        "sim-2 2 4Gi 50 10.99.0.3 sim:// linux",
    ]);

    // A pod bound to a simulated node runs and is Ready.
    server
        .kubectl(Kubectl::V132)
        .stdin(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
                "spec":{"nodeName":"sim-1","containers":[{"name":"app","image":"nginx:1.27"}]}}"#,
        )
        .run(&["create", "-f", "-"])
        .ok();
    wait_for_pod(&server, "web", "1/1", "Running");
    let ips = server
        .kubectl(Kubectl::V132)
        .run(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.hostIP} {.status.podIP}",
        ])
        .ok()
        .to_string();
    assert_eq!(ips, "10.99.0.2 10.128.1.1");

    // A Job's pod runs for --job-duration, then completes.
    server
        .kubectl(Kubectl::V132)
        .stdin(
            r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j"},
                "spec":{"template":{"spec":{"restartPolicy":"Never",
                        "containers":[{"name":"c","image":"busybox"}]}}}}"#,
        )
        .run(&["create", "-f", "-"])
        .ok();
    wait_until(SOON, "the Job's pod to complete", || {
        let all = pods(&server);
        all.iter()
            .any(|(n, r, s)| n.starts_with("j-") && r == "0/1" && s == "Completed")
            .then_some(())
            .ok_or_else(|| format!("{all:?}"))
    });

    // Deleting waits for the node to finish the deletion; then the pod is gone.
    server
        .kubectl(Kubectl::V132)
        .run(&["delete", "pod", "web", "--timeout=60s"])
        .ok();
    let err = server
        .kubectl(Kubectl::V132)
        .run(&["get", "pod", "web"])
        .err()
        .to_string();
    assert!(err.contains("NotFound"), "{err}");

    // The Lease is held by its node and renewed.
    let first = renew_time(&server, "sim-0");
    assert!(first.starts_with("sim-0 40 "), "{first}");
    wait_until(RENEWAL, "the lease of sim-0 to be renewed", || {
        let now = renew_time(&server, "sim-0");
        (now != first).then_some(()).ok_or(now)
    });

    // Stopping the simulator leaves its nodes registered.
    sim.stop();
    server
        .kubectl(Kubectl::V132)
        .run(&["get", "nodes", "-o", "name", "-l", "type=sim"])
        .assert_lines(&["node/sim-0", "node/sim-1", "node/sim-2"]);
}
