//! The node: `skiff server` with its in-process agent runs pods as real containers
//! (libcontainer behind a shim per container), from busybox built by [`crate::images`]
//! and imported from the node's air-gap folder at start. Driven with kubectl 1.32.
//! These tests need root, as CI is.

use crate::harness::{wait_until, Kubectl, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Convergence on a debug build on a busy 2-core machine.
pub(crate) const SOON: Duration = Duration::from_secs(60);
pub(crate) const KUBECTL: Kubectl = Kubectl::V132;

pub(crate) fn apply(s: &Server, manifest: &Value) {
    s.kubectl(KUBECTL)
        .stdin(manifest.to_string())
        .run(&["apply", "-f", "-"])
        .ok();
}

pub(crate) fn pod(s: &Server, name: &str) -> Result<Value, String> {
    let out = s.kubectl(KUBECTL).run(&["get", "pod", name, "-o", "json"]);
    if !out.status.success() {
        return Err(out.stderr.clone());
    }
    serde_json::from_str(&out.stdout).map_err(|e| e.to_string())
}

/// Waits until `check` holds for the pod, returning it.
#[track_caller]
pub(crate) fn wait_pod(
    s: &Server,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(SOON, &format!("pod {name}: {what}"), || {
        let p = pod(s, name)?;
        if check(&p) {
            Ok(p)
        } else {
            Err(p["status"].to_string())
        }
    })
}

pub(crate) fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn simple_pod(name: &str, restart: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]
        }
    })
}

/// The node registers and goes Ready; a pod runs, `kubectl logs` shows its output, and
/// it ends Succeeded; a missing image gives ErrImagePull then ImagePullBackOff.
#[test]
fn a_pod_runs_and_kubectl_logs_shows_its_output() {
    let s = Server::start_node(&[]);
    let node = s.node_name();
    let n = wait_until(SOON, "the node Ready", || {
        let out = s
            .kubectl(KUBECTL)
            .run(&["get", "node", &node, "-o", "json"]);
        let n: Value = serde_json::from_str(&out.stdout).map_err(|_| out.stderr.clone())?;
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            Ok(n)
        } else {
            Err(n["status"].to_string())
        }
    });
    assert!(n["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("skiff://"));
    assert_eq!(
        n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        "true"
    );
    assert_eq!(n["status"]["capacity"]["pods"], "110");

    apply(
        &s,
        &simple_pod(
            "hello",
            "Never",
            "echo hello from a container; echo second line; hostname",
        ),
    );
    let p = wait_pod(&s, "hello", "Succeeded", |p| phase(p) == "Succeeded");
    let st = &p["status"]["containerStatuses"][0];
    assert_eq!(st["state"]["terminated"]["reason"], "Completed", "{st}");
    assert!(st["containerID"].as_str().unwrap().starts_with("skiff://"));
    assert!(st["imageID"].as_str().unwrap().contains("@sha256:"), "{st}");
    let logs = s.kubectl(KUBECTL).run(&["logs", "hello"]);
    assert_eq!(logs.ok(), "hello from a container\nsecond line\nhello\n");
    let tail = s.kubectl(KUBECTL).run(&["logs", "hello", "--tail=1"]);
    assert_eq!(tail.ok(), "hello\n");

    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nosuch"},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/nosuch:1"}]}
        }),
    );
    wait_pod(&s, "nosuch", "ErrImagePull", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    wait_pod(&s, "nosuch", "ImagePullBackOff", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
}

/// A crashing container reaches CrashLoopBackOff with its restartCount climbing, and
/// `kubectl logs --previous` reads the run before; a memory limit produces OOMKilled.
#[test]
fn crash_loop_back_off_and_oom_killed() {
    let s = Server::start_node(&[]);
    apply(&s, &simple_pod("crash", "Always", "echo run; exit 3"));
    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "busybox",
                // tail buffers a line that never ends: memory grows until the limit.
                "command": ["sh", "-c", "tail /dev/zero"],
                "resources": {"limits": {"memory": "16Mi"}}
            }]}
        }),
    );
    let p = wait_pod(&s, "hog", "OOMKilled", |p| phase(p) == "Failed");
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137, "{t}");

    let p = wait_pod(&s, "crash", "CrashLoopBackOff after two restarts", |p| {
        let st = &p["status"]["containerStatuses"][0];
        st["restartCount"].as_i64().unwrap_or(0) >= 2
            && st["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let st = &p["status"]["containerStatuses"][0];
    assert_eq!(st["lastState"]["terminated"]["exitCode"], 3, "{st}");
    assert_eq!(phase(&p), "Running", "a restarting pod is Running");
    let previous = s.kubectl(KUBECTL).run(&["logs", "crash", "--previous"]);
    assert_eq!(previous.ok(), "run\n");
}

/// A 3-replica Deployment is all Running and Ready; deleting it stops its containers.
#[test]
fn a_deployment_runs_and_goes() {
    let s = Server::start_node(&[]);
    s.kubectl(KUBECTL)
        .run(&[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=3",
            "--",
            "sh",
            "-c",
            "while true; do sleep 1; done",
        ])
        .ok();
    wait_until(SOON, "3 ready replicas", || {
        let d = s
            .kubectl(KUBECTL)
            .run(&["get", "deployment", "web", "-o", "json"]);
        let d: Value = serde_json::from_str(&d.stdout).map_err(|e| e.to_string())?;
        if d["status"]["readyReplicas"] == 3 {
            Ok(())
        } else {
            Err(d["status"].to_string())
        }
    });
    let containers = s.data_dir().join("agent/containers");
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 3);
    s.kubectl(KUBECTL)
        .run(&["delete", "deployment", "web"])
        .ok();
    wait_until(SOON, "the pods and their containers gone", || {
        let out = s.kubectl(KUBECTL).run(&["get", "pods", "-o", "name"]);
        let left = std::fs::read_dir(&containers)
            .map(|d| d.count())
            .unwrap_or(0);
        if out.stdout.trim().is_empty() && left == 0 {
            Ok(())
        } else {
            Err(format!("pods: {:?}, container folders: {left}", out.stdout))
        }
    });
}

/// Init containers run in order before the app container, which sees their work in a
/// shared emptyDir, a configMap and a secret as files, and env from both; a configMap
/// update reaches the running pod.
#[test]
fn init_containers_volumes_and_env() {
    let s = Server::start_node(&[]);
    s.kubectl(KUBECTL)
        .run(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=color=blue",
        ])
        .ok();
    s.kubectl(KUBECTL)
        .run(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=token=s3cret",
        ])
        .ok();
    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ordered"},
            "spec": {
                "initContainers": [
                    {"name": "one", "image": "busybox", "command": ["sh", "-c", "echo one >> /work/trace"],
                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                    {"name": "two", "image": "busybox", "command": ["sh", "-c", "echo two >> /work/trace"],
                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
                ],
                "containers": [{
                    "name": "main", "image": "busybox",
                    "command": ["sh", "-c", "cat /work/trace; echo color=$COLOR token=$TOKEN name=$MY_NAME; cat /cfg/color; echo; cat /sec/token; echo; while true; do sleep 1; done"],
                    "env": [
                        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                    ],
                    "volumeMounts": [
                        {"name": "work", "mountPath": "/work"},
                        {"name": "cfg", "mountPath": "/cfg"},
                        {"name": "sec", "mountPath": "/sec"}
                    ]
                }],
                "volumes": [
                    {"name": "work", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "settings"}},
                    {"name": "sec", "secret": {"secretName": "creds"}}
                ]
            }
        }),
    );
    let p = wait_pod(&s, "ordered", "Running and Ready", |p| {
        phase(p) == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
    });
    for (i, st) in p["status"]["initContainerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(
            st["state"]["terminated"]["reason"], "Completed",
            "init {i}: {st}"
        );
    }
    let logs = wait_until(SOON, "the app's output", || {
        let out = s.kubectl(KUBECTL).run(&["logs", "ordered"]);
        if out.stdout.lines().count() >= 5 {
            Ok(out.stdout.clone())
        } else {
            Err(out.stdout.clone())
        }
    });
    assert_eq!(
        logs,
        "one\ntwo\ncolor=blue token=s3cret name=ordered\nblue\ns3cret\n"
    );

    s.kubectl(KUBECTL)
        .stdin(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"color": "green"}}).to_string())
        .run(&["apply", "-f", "-"])
        .ok();
    let file = wait_until(SOON, "the update in the pod's volume", || {
        let dirs: Vec<_> = std::fs::read_dir(s.data_dir().join("agent/pods"))
            .unwrap()
            .flatten()
            .collect();
        let f = dirs[0].path().join("volumes/cfg/color");
        match std::fs::read_to_string(&f) {
            Ok(c) if c == "green" => Ok(f),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(file.exists());
}

/// Killing skiff and starting it again leaves the containers running: the same
/// container, restartCount unchanged, and its log goes on.
#[test]
fn containers_outlive_a_killed_skiff() {
    let mut s = Server::start_node(&[]);
    apply(
        &s,
        &simple_pod(
            "ticker",
            "Always",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        ),
    );
    let before = wait_pod(&s, "ticker", "Running", |p| phase(p) == "Running");
    let id = before["status"]["containerStatuses"][0]["containerID"].clone();
    s.kill();
    let lines_then = {
        let logs = std::fs::read_dir("/var/log/pods")
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().contains("_ticker_"))
            .expect("the pod's log folder")
            .path()
            .join("main/0.log");
        std::fs::read_to_string(&logs).unwrap().lines().count()
    };
    s.start_again();
    let after = wait_pod(&s, "ticker", "Running after the restart", |p| {
        phase(p) == "Running"
    });
    let st = &after["status"]["containerStatuses"][0];
    assert_eq!(st["containerID"], id, "the same container");
    assert_eq!(st["restartCount"], 0);
    let started = Instant::now();
    wait_until(SOON, "the log to go on", || {
        let out = s.kubectl(KUBECTL).run(&["logs", "ticker"]);
        let n = out.stdout.lines().count();
        if n > lines_then + 3 {
            Ok(())
        } else {
            Err(format!("{n} lines, {lines_then} before"))
        }
    });
    assert!(started.elapsed() < SOON);
}

/// Deleting a pod sends SIGTERM (a container that handles it ends at once) and, past
/// the grace period, SIGKILL; then the pod object goes.
#[test]
fn graceful_deletion_honours_sigterm_and_the_grace_period() {
    let s = Server::start_node(&[]);
    apply(
        &s,
        &simple_pod(
            "polite",
            "Always",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ),
    );
    let mut stubborn = simple_pod(
        "stubborn",
        "Always",
        "trap '' TERM; while true; do sleep 0.1; done",
    );
    stubborn["spec"]["terminationGracePeriodSeconds"] = json!(2);
    apply(&s, &stubborn);
    wait_pod(&s, "polite", "Running", |p| phase(p) == "Running");
    wait_pod(&s, "stubborn", "Running", |p| phase(p) == "Running");

    let t = Instant::now();
    s.kubectl(KUBECTL).run(&["delete", "pod", "polite"]).ok();
    let polite = t.elapsed();
    assert!(
        polite < Duration::from_secs(4),
        "SIGTERM ended it: {polite:?}"
    );

    let t = Instant::now();
    s.kubectl(KUBECTL).run(&["delete", "pod", "stubborn"]).ok();
    let stubborn = t.elapsed();
    assert!(
        stubborn >= Duration::from_secs(2) && stubborn < Duration::from_secs(15),
        "SIGKILL after the 2 s grace period: {stubborn:?}"
    );
}

/// `kubectl exec` returns output and exit codes and passes stdin, with both kubectl
/// versions; `kubectl cp` copies a file in and out (tar over exec).
#[test]
fn exec_and_cp() {
    let s = Server::start_node(&[]);
    apply(
        &s,
        &simple_pod("box", "Always", "while true; do sleep 1; done"),
    );
    wait_pod(&s, "box", "Running", |p| phase(p) == "Running");
    for k in [Kubectl::V132, Kubectl::Current] {
        let out = s.kubectl(k).run(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; hostname",
        ]);
        assert_eq!(out.ok(), "out\nbox\n");
        assert!(out.stderr.contains("err"), "{out:?}");
        let out = s
            .kubectl(k)
            .run(&["exec", "box", "--", "sh", "-c", "exit 3"]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let out = s.kubectl(k).stdin("line one\nline two\n").run(&[
            "exec",
            "-i",
            "box",
            "--",
            "sh",
            "-c",
            "wc -l; cat >/dev/null",
        ]);
        assert_eq!(out.ok().trim(), "2");
        let out = s.kubectl(k).run(&["exec", "box", "--", "no-such-command"]);
        assert!(!out.status.success());
        assert!(out.stderr.contains("no-such-command"), "{out:?}");
    }
    // On a terminal (`script` gives kubectl one): the process sees a tty of the
    // client's size (which arrives just after the process starts, as upstream's, so
    // the shell looks again until it is there), and its exit code comes back.
    let cmd = format!(
        "stty cols 100 rows 30; {} exec -it box -- sh -c 'tty; for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.2; done; echo $s; exit 5'",
        KUBECTL.program().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) runs kubectl on a terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
    // The node's resource usage through nodes/proxy, from its cgroups.
    let node = s.node_name();
    let raw = s.kubectl(KUBECTL).run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
    ]);
    let summary: Value = serde_json::from_str(raw.ok()).unwrap();
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "box")
        .expect("the running pod in the summary")
        .clone();
    assert!(
        pod["containers"][0]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0,
        "{pod}"
    );
    assert!(
        pod["containers"][0]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0,
        "{pod}"
    );
    let metrics = s.kubectl(KUBECTL).run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics/resource"),
    ]);
    assert!(
        metrics.ok().contains("container_cpu_usage_seconds_total{container=\"main\",namespace=\"default\",pod=\"box\"}"),
        "{metrics:?}"
    );
    let local = s.write_file("in.txt", "copied in\n");
    s.kubectl(KUBECTL)
        .run(&["cp", local.to_str().unwrap(), "box:/tmp/in.txt"])
        .ok();
    let out = s
        .kubectl(KUBECTL)
        .run(&["exec", "box", "--", "cat", "/tmp/in.txt"]);
    assert_eq!(out.ok(), "copied in\n");
    let back = s.dir().join("back.txt");
    s.kubectl(KUBECTL)
        .run(&["cp", "box:/tmp/in.txt", back.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
}

/// A failing liveness probe restarts the container; a readiness probe gates Ready (an
/// exec probe on a file, and an httpGet probe on busybox's httpd in the pod).
#[test]
fn probes_restart_and_gate_readiness() {
    let s = Server::start_node(&[]);
    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "mkdir -p /www; echo ok > /www/index.html; httpd -p 8080 -h /www; while true; do sleep 1; done"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/index.html"}, "periodSeconds": 1, "failureThreshold": 2}
            }]}
        }),
    );
    wait_pod(&s, "probed", "Running, not Ready", |p| {
        phase(p) == "Running" && p["status"]["containerStatuses"][0]["ready"] == false
    });
    s.kubectl(KUBECTL)
        .run(&["exec", "probed", "--", "touch", "/tmp/ready"])
        .ok();
    wait_pod(&s, "probed", "Ready once the readiness probe passes", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
            && p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    });
    // Breaking the liveness probe's page restarts the container.
    s.kubectl(KUBECTL)
        .run(&["exec", "probed", "--", "rm", "/www/index.html"])
        .ok();
    let p = wait_pod(&s, "probed", "restarted by its liveness probe", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let st = &p["status"]["containerStatuses"][0];
    assert!(st["lastState"]["terminated"].is_object(), "{st}");
}

/// Two containers share an emptyDir; a postStart hook runs before the container counts
/// as started; deleting the pod runs the preStop hook before SIGTERM (the other
/// container sees what it wrote), within the grace period.
#[test]
fn shared_emptydir_and_lifecycle_hooks() {
    let s = Server::start_node(&[]);
    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pair"},
            "spec": {"terminationGracePeriodSeconds": 10, "containers": [
                {"name": "writer", "image": "busybox",
                 "command": ["sh", "-c", "echo shared > /data/note; trap 'exit 0' TERM; while true; do sleep 0.1; done"],
                 "lifecycle": {
                     "postStart": {"exec": {"command": ["sh", "-c", "echo started > /data/post-start"]}},
                     "preStop": {"exec": {"command": ["sh", "-c", "echo stopping > /data/pre-stop"]}}
                 },
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "reader", "image": "busybox",
                 "command": ["sh", "-c", "trap 'cat /data/pre-stop; exit 0' TERM; while true; do sleep 0.1; done"],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ], "volumes": [{"name": "data", "emptyDir": {}}]}
        }),
    );
    wait_pod(&s, "pair", "both running", |p| {
        p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|c| c["ready"] == true))
    });
    let out = wait_until(SOON, "the writer's file seen by the reader", || {
        let o = s.kubectl(KUBECTL).run(&[
            "exec",
            "pair",
            "-c",
            "reader",
            "--",
            "cat",
            "/data/note",
            "/data/post-start",
        ]);
        if o.status.success() {
            Ok(o.stdout.clone())
        } else {
            Err(o.stderr.clone())
        }
    });
    assert_eq!(out, "shared\nstarted\n");
    // The reader's log is gone with the pod; watch it while the pod is deleted.
    let mut follow = s
        .kubectl(KUBECTL)
        .spawn(&["logs", "-f", "pair", "-c", "reader"]);
    let t = Instant::now();
    s.kubectl(KUBECTL)
        .run(&["delete", "pod", "pair", "--wait=false"])
        .ok();
    let line = follow.wait_for_line(SOON, |l| l.contains("stopping"));
    assert_eq!(
        line.trim(),
        "stopping",
        "the preStop hook ran before SIGTERM"
    );
    wait_until(SOON, "the pod gone", || {
        let o = s.kubectl(KUBECTL).run(&["get", "pod", "pair"]);
        if o.status.success() {
            Err(o.stdout.clone())
        } else {
            Ok(())
        }
    });
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "within the grace period: {:?}",
        t.elapsed()
    );
}

/// A manifest in the node's pod-manifests folder runs as a static pod, visible as a
/// mirror pod `<name>-<node>`; removing the file removes the pod.
#[test]
fn static_pods_from_the_manifests_folder() {
    let s = Server::start_node(&[]);
    let dir = s.data_dir().join("agent/pod-manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("static.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo from a static pod; while true; do sleep 1; done']\n",
    )
    .unwrap();
    let name = format!("static-{}", s.node_name());
    let p = wait_pod(&s, &name, "Running", |p| phase(p) == "Running");
    assert!(p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Node");
    wait_until(SOON, "its log", || {
        let out = s.kubectl(KUBECTL).run(&["logs", &name]);
        if out.stdout == "from a static pod\n" {
            Ok(())
        } else {
            Err(out.stdout.clone())
        }
    });
    std::fs::remove_file(&file).unwrap();
    wait_until(SOON, "the mirror pod gone", || {
        let o = s.kubectl(KUBECTL).run(&["get", "pod", &name]);
        if o.status.success() {
            Err(o.stdout.clone())
        } else {
            Ok(())
        }
    });
}

/// Debian's docker-registry on loopback, killed when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's docker-registry package) must be installed");
        let r = Registry {
            child,
            port,
            _dir: dir,
        };
        wait_until(SOON, "the registry listening", || {
            std::net::TcpStream::connect(("127.0.0.1", r.port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        r
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image the node does not have is pulled through a registries.yaml mirror of
/// docker.io (Debian's docker-registry on loopback); one the registry lacks gives
/// ErrImagePull, then ImagePullBackOff.
#[test]
fn pulls_through_a_registries_yaml_mirror() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let tar = crate::images::busybox(tmp.path(), "docker.io/library/pulled:1");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!(
            "docker://127.0.0.1:{}/library/pulled:1",
            registry.port
        ))
        .output()
        .expect("skopeo (Debian's skopeo package) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registries = tmp.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  docker.io:\n    endpoint:\n      - http://127.0.0.1:{}\n",
            registry.port
        ),
    )
    .unwrap();
    let s = Server::start_node(&["--private-registry", registries.to_str().unwrap()]);
    let mut pod = simple_pod("pulled", "Never", "echo pulled and ran");
    pod["spec"]["containers"][0]["image"] = json!("pulled:1");
    apply(&s, &pod);
    let p = wait_pod(&s, "pulled", "Succeeded", |p| phase(p) == "Succeeded");
    let id = p["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("docker.io/library/pulled@sha256:"), "{id}");
    assert_eq!(
        s.kubectl(KUBECTL).run(&["logs", "pulled"]).ok(),
        "pulled and ran\n"
    );
    let images = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["images", "ls", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&images.stdout).contains("docker.io/library/pulled:1"));

    let mut missing = simple_pod("missing", "Never", "true");
    missing["spec"]["containers"][0]["image"] = json!("pulled:2");
    apply(&s, &missing);
    let p = wait_pod(&s, "missing", "ErrImagePull", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].to_string();
    assert!(message.contains("not found"), "{message}");
    wait_pod(&s, "missing", "ImagePullBackOff", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
}

/// A claim bound to a hostPath PersistentVolume is mounted, and what a pod writes there
/// is on the host; projected volumes gather a configMap, a secret and downward API
/// fields; containers get the Services' environment variables.
#[test]
fn persistent_and_projected_volumes_and_service_env() {
    let s = Server::start_node(&[]);
    let host = s.dir().join("pv");
    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local-pv"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": host.to_str().unwrap(), "type": "DirectoryOrCreate"}}
        }),
    );
    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "local-pv",
                     "resources": {"requests": {"storage": "1Gi"}}}
        }),
    );
    // No volume binder runs yet: bind the claim as one would.
    s.kubectl(KUBECTL)
        .run(&[
            "patch",
            "pvc",
            "data",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Bound"}}"#,
        ])
        .ok();
    s.kubectl(KUBECTL)
        .run(&["create", "configmap", "cfg", "--from-literal=a=1"])
        .ok();
    s.kubectl(KUBECTL)
        .run(&["create", "secret", "generic", "sec", "--from-literal=b=2"])
        .ok();
    apply(
        &s,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vols", "labels": {"app": "vols"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo kept > /data/file; cat /all/a /all/b /all/name; echo; echo $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "all", "mountPath": "/all"}]
            }], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "cfg"}},
                    {"secret": {"name": "sec"}},
                    {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
                ]}}
            ]}
        }),
    );
    wait_pod(&s, "vols", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(
        std::fs::read_to_string(host.join("file")).unwrap(),
        "kept\n"
    );
    let logs = s.kubectl(KUBECTL).run(&["logs", "vols"]);
    let lines: Vec<&str> = logs.ok().lines().collect();
    assert_eq!(lines[0], "12vols");
    let svc = s.kubectl(KUBECTL).run(&[
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].port}",
    ]);
    assert_eq!(lines[1], svc.ok());
}
