//! What machines join a cluster with: the server's token in K3s's secure format, kept
//! across restarts or set by `--token`, the agent-only token, and the CA handed out at
//! `/cacerts` for a joining machine to check against its token.

use crate::harness::Server;
use sha2::Digest;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// `GET /cacerts` with no credentials at all, as a machine that has not joined yet.
fn anonymous_cacerts(s: &Server) -> String {
    let out = Command::new("curl")
        .args(["-sSfk", &format!("https://127.0.0.1:{}/cacerts", s.port())])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_token_names_the_ca_and_survives_restarts() {
    let mut s = Server::start();
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/ca.crt")).unwrap();
    let hash = hex::encode(sha2::Sha256::digest(ca.as_bytes()));
    let path = s.data_dir().join("server/token");
    let token = std::fs::read_to_string(&path).unwrap();
    let secret = token
        .trim()
        .strip_prefix(&format!("K10{hash}::server:"))
        .unwrap_or_else(|| panic!("{token:?} is K10<CA hash>::server:<secret>"))
        .to_string();
    assert_eq!(secret.len(), 64, "{secret}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!s.data_dir().join("server/agent-token").exists());
    // Anyone gets the CA, which is what the hash is of.
    assert_eq!(anonymous_cacerts(&s), ca);
    s.restart();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
}

#[test]
fn given_tokens_are_used_and_a_foreign_one_is_refused() {
    let s = Server::start_with(&["--token", "abc123", "--agent-token", "agents-only"]);
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/ca.crt")).unwrap();
    let hash = hex::encode(sha2::Sha256::digest(ca.as_bytes()));
    let read = |name: &str| {
        std::fs::read_to_string(s.data_dir().join("server").join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("token"), format!("K10{hash}::server:abc123"));
    assert_eq!(read("agent-token"), format!("K10{hash}::node:agents-only"));

    // A secure token for another cluster's CA: one line saying so, a non-zero exit.
    let foreign = format!("K10{}::server:abc123", "0".repeat(64));
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--config", "/dev/null", "--disable-agent"])
        .args(["--https-listen-port", "1", "--bind-address", "127.0.0.1"])
        .arg("--data-dir")
        .arg(s.data_dir())
        .args(["--token", &foreign])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("skiff: ") && last.contains("another cluster"),
        "{err}"
    );
    // And the token on disk is untouched.
    assert_eq!(read("token"), format!("K10{hash}::server:abc123"));
}
