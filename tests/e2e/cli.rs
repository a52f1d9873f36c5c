//! The `skiff` command line itself: `--version`, `skiff kubectl`, bad flags, and the
//! serving certificate's names.

use crate::harness::Server;
use std::process::Command;

fn skiff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
}

#[test]
fn version_and_bad_flags() {
    let out = skiff().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("skiff {}", env!("CARGO_PKG_VERSION"))
    );

    // A bad value is one line naming the flag, and a non-zero exit, before any port is bound.
    let out = skiff()
        .args([
            "server",
            "--config",
            "/dev/null",
            "--service-cidr",
            "10.43.0.0",
            "--data-dir",
            "/nonexistent/skiff",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("skiff: --service-cidr \"10.43.0.0\""),
        "{err}"
    );
}

#[test]
fn skiff_kubectl_uses_the_admin_kubeconfig_or_says_kubectl_is_missing() {
    let server = Server::start();
    let path = std::env::var("PATH").unwrap_or_default();
    let out = skiff()
        .args(["kubectl", "get", "namespace", "kube-system", "-o", "name"])
        .env("SKIFF_WRITE_KUBECONFIG", server.kubeconfig())
        .env_remove("KUBECONFIG")
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/kube-system"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = skiff()
        .args(["kubectl", "version"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kubectl was not found on PATH"), "{err}");
}

#[test]
fn serving_certificate_names_the_cluster_addresses() {
    let server = Server::start();
    let pem = std::fs::read_to_string(
        server
            .data_dir()
            .join("server/tls/serving-kube-apiserver.crt"),
    )
    .unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(pem.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let sans = String::from_utf8_lossy(&out.stdout);
    for want in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP Address:10.43.0.1",
    ] {
        assert!(sans.contains(want), "{want} missing from {sans}");
    }
    let key = server.data_dir().join("server/tls/ca.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}
