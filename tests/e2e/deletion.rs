//! Graceful deletion at the API, with no kubelet and no controllers: a pod bound to a
//! node waits out its grace period for the node to confirm, finalizers or not.

use crate::harness::Server;
use serde_json::json;

/// Removing the last finalizer of a pod still in its grace period does not delete it
/// (upstream deletes on update only once the grace period is 0); the node's delete with
/// grace 0 does.
#[test]
fn a_pod_in_its_grace_period_outlives_its_last_finalizer() {
    let s = Server::start_with(&["--disable-controller-manager", "--disable-scheduler"]);
    let path = "/api/v1/namespaces/default/pods";
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "held", "finalizers": ["e2e.skiff.dev/hold"]},
        "spec": {"nodeName": "somewhere", "containers": [{"name": "c", "image": "busybox"}]}
    });
    let r = s.raw("POST", path, Some("application/json"), pod.to_string());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let one = format!("{path}/held");
    let r = s.raw("DELETE", &one, None, Vec::new());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["metadata"]["deletionGracePeriodSeconds"], 30);

    let release = json!({"metadata": {"finalizers": null}}).to_string();
    let r = s.raw("PATCH", &one, Some("application/merge-patch+json"), release);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let still = s.raw("GET", &one, None, Vec::new());
    assert_eq!(still.status, 200, "the pod went with its finalizer");
    assert!(still.json()["metadata"]["deletionTimestamp"].is_string());

    let now = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
    let r = s.raw("DELETE", &one, Some("application/json"), now.to_string());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    s.raw("GET", &one, None, Vec::new())
        .assert_status(404, "NotFound");
}
