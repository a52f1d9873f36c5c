//! Pods' security settings the node enforces: `seccompProfile` (RuntimeDefault, Localhost,
//! Unconfined, and the node's `--seccomp-default`), privileged containers, and `fsGroup`
//! on volumes.
//! Real containers from busybox, checked from inside with `kubectl exec`, as in
//! [`crate::node`]. These tests need root, as CI is.

use crate::harness::{wait_until, Output, Server};
use crate::node::{apply, wait_pod, KUBECTL, SOON};
use serde_json::{json, Value};

fn running(p: &Value) -> bool {
    p["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

/// `kubectl exec POD -- sh -c SCRIPT`. kubectl 1.32's WebSocket client reads before it
/// has made its streams, and on a loaded machine it can drop the first output with
/// "Unknown stream id"; that run is made again (the scripts here may run twice).
fn exec(s: &Server, pod: &str, script: &str) -> Output {
    let mut tries = 0;
    loop {
        let out = s
            .kubectl(KUBECTL)
            .run(&["exec", pod, "--", "sh", "-c", script]);
        tries += 1;
        if tries == 3 || !out.stderr.contains("Unknown stream id") {
            return out;
        }
    }
}

/// A pod that sleeps, with `pod_sc` as its securityContext and `sc` as its container's.
fn sleeper(name: &str, pod_sc: Value, sc: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": pod_sc,
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "while true; do sleep 1; done"],
                "securityContext": sc
            }]
        }
    })
}

/// The `Seccomp:` mode of the exec'd shell and of the container's init.
fn seccomp_modes(s: &Server, pod: &str) -> String {
    exec(
        s,
        pod,
        "grep Seccomp: /proc/self/status | tr -d '\\t'; grep Seccomp: /proc/1/status | tr -d '\\t'",
    )
    .ok()
    .to_string()
}

/// On a node started with `--seccomp-default`: an Unconfined pod has no filter and may
/// make a user namespace; RuntimeDefault (asked for, or by the node's default) filters,
/// and the same `unshare` fails with EPERM, in the container's init and in `kubectl
/// exec`; a container's Localhost profile from the node's folder replaces the pod's
/// profile and denies what it lists; a missing Localhost profile is
/// CreateContainerConfigError; a privileged container runs unfiltered with every
/// capability the node has.
#[test]
fn seccomp_profiles() {
    let s = Server::start_node(&["--seccomp-default"]);
    let profiles = s.data_dir().join("agent/seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("deny-mkdir.json"),
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        })
        .to_string(),
    )
    .unwrap();
    let runtime_default = json!({"seccompProfile": {"type": "RuntimeDefault"}});
    apply(
        &s,
        &sleeper(
            "unconfined",
            json!({"seccompProfile": {"type": "Unconfined"}}),
            json!({}),
        ),
    );
    apply(&s, &sleeper("default", runtime_default.clone(), json!({})));
    apply(&s, &sleeper("node-default", json!({}), json!({})));
    apply(
        &s,
        &sleeper(
            "local",
            runtime_default.clone(),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/deny-mkdir.json"}}),
        ),
    );
    apply(
        &s,
        &sleeper(
            "missing",
            json!({}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/nosuch.json"}}),
        ),
    );
    // Privileged, even under the node's default: no filter, and every capability the
    // node itself has (this machine's bounding set may lack some).
    apply(
        &s,
        &sleeper(
            "privileged",
            runtime_default.clone(),
            json!({"privileged": true}),
        ),
    );
    for name in [
        "unconfined",
        "default",
        "node-default",
        "local",
        "privileged",
    ] {
        wait_pod(&s, name, "running", running);
    }
    assert_eq!(seccomp_modes(&s, "privileged"), "Seccomp:0\nSeccomp:0\n");
    let host_bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    let out = exec(&s, "privileged", "grep CapEff: /proc/1/status");
    assert_eq!(out.ok().trim(), format!("CapEff:\t{host_bounding}"));

    assert_eq!(seccomp_modes(&s, "unconfined"), "Seccomp:0\nSeccomp:0\n");
    let out = exec(
        &s,
        "unconfined",
        "unshare -U true && echo made a user namespace",
    );
    assert_eq!(
        out.ok(),
        "made a user namespace\n",
        "works without a filter"
    );

    for name in ["default", "node-default"] {
        assert_eq!(seccomp_modes(&s, name), "Seccomp:2\nSeccomp:2\n", "{name}");
        let out = exec(&s, name, "unshare -U true");
        assert!(
            out.err().contains("Operation not permitted"),
            "{name}: {out:?}"
        );
        // Everything else still works under the deny-list.
        exec(
            &s,
            name,
            "mkdir -p /tmp/d && echo x > /tmp/d/f && cat /tmp/d/f",
        )
        .ok();
    }

    assert_eq!(seccomp_modes(&s, "local"), "Seccomp:2\nSeccomp:2\n");
    let out = exec(&s, "local", "mkdir /tmp/d");
    assert!(out.err().contains("Operation not permitted"), "{out:?}");
    let out = exec(
        &s,
        "local",
        "unshare -U true && echo the pod profile is replaced",
    );
    assert_eq!(out.ok(), "the pod profile is replaced\n");

    let p = wait_pod(&s, "missing", "CreateContainerConfigError", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("profiles/nosuch.json") && message.contains("not found"),
        "{message}"
    );
}

/// A pod with `runAsUser: 1000` and `fsGroup: 2000`: its emptyDir, configMap and secret
/// volumes and their files have group 2000 (a defaultMode of 0400 becomes group
/// readable), the emptyDir is writable and setgid so new files get the group, and a
/// configMap update arrives with the group too.
#[test]
fn fs_group_owns_the_volumes() {
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
    let mut manifest = sleeper(
        "owned",
        json!({"runAsUser": 1000, "fsGroup": 2000}),
        json!({}),
    );
    manifest["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "work", "mountPath": "/work"},
        {"name": "cfg", "mountPath": "/cfg"},
        {"name": "sec", "mountPath": "/sec"}
    ]);
    manifest["spec"]["volumes"] = json!([
        {"name": "work", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "settings", "defaultMode": 0o400}},
        {"name": "sec", "secret": {"secretName": "creds"}}
    ]);
    apply(&s, &manifest);
    wait_pod(&s, "owned", "running", running);

    exec(&s, "owned", "id -u; id -G").assert_lines(&["1000", "0 2000"]);
    exec(
        &s,
        "owned",
        "stat -c %g /work /cfg /sec /cfg/color /sec/token /cfg/..data",
    )
    .assert_lines(&["2000", "2000", "2000", "2000", "2000", "2000"]);
    exec(
        &s,
        "owned",
        "stat -L -c '%g %a' /cfg/color /sec/token; cat /cfg/color",
    )
    .assert_lines(&["2000 440", "2000 644", "blue"]);
    exec(
        &s,
        "owned",
        "stat -c %a /work; echo hi > /work/new && stat -c '%u %g' /work/new; mkdir -p /work/sub && stat -c '%g %a' /work/sub",
    )
    .assert_lines(&["2777", "1000 2000", "2000 2755"]);

    apply(
        &s,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"color": "green"}}),
    );
    wait_until(SOON, "the update in the pod", || {
        let out = exec(&s, "owned", "cat /cfg/color");
        if out.status.success() && out.stdout == "green" {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
    exec(
        &s,
        "owned",
        "stat -c %g /cfg /cfg/color /cfg/..data; stat -L -c '%g %a' /cfg/color",
    )
    .assert_lines(&["2000", "2000", "2000", "2000 440"]);
}
