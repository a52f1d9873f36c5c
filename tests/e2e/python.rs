//! The official Kubernetes Python client against the server.

use crate::harness::{self, Server};
use std::process::Command;

#[test]
fn python_client_create_list_watch_delete() {
    let python = harness::python();
    let s = Server::start();
    // Written out from the test binary itself: a binary built in another checkout
    // sharing the target directory must not point at that checkout's path.
    let script = s.dir().join("python_client.py");
    std::fs::write(&script, include_str!("python_client.py"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
    let out = Command::new(&python)
        .arg(&script)
        .arg(s.kubeconfig())
        .arg("from-python")
        .env("HOME", s.dir())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "created from-python color=blue",
            "listed from-python",
            "watched MODIFIED from-python color=green rv-matches-patch=True",
            // Upstream answers a ConfigMap delete with a Status of Success.
            "deleted from-python reply=Status/Success",
            "read after delete: 404 Not Found",
        ],
        "stderr:\n{stderr}"
    );
}
