//! What machines join a cluster with: the server's token in K3s's secure format, kept
//! across restarts or set by `--token`, the agent-only token, and the CA handed out at
//! `/cacerts` for a joining machine to check against its token.

use crate::harness::{wait_until, Kubectl, Server};
use sha2::Digest;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

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

/// A `skiff agent` on this machine (loopback, no pods), killed when dropped.
struct Agent {
    child: std::process::Child,
    dir: tempfile::TempDir,
    name: String,
}

impl Agent {
    /// Starts `skiff agent` joining `s` with `token`, as node `name`.
    fn start(s: &Server, token: &str, name: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let child = Agent::spawn(s, token, dir.path(), name);
        Agent {
            child,
            dir,
            name: name.to_string(),
        }
    }

    fn spawn(
        s: &Server,
        token: &str,
        data_dir: &std::path::Path,
        name: &str,
    ) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["agent", "--config", "/dev/null", "--server"])
            .arg(format!("https://127.0.0.1:{}", s.port()))
            .args(["--token", token, "--node-name", name])
            .args(["--node-ip", "127.0.0.1", "--kubelet-port", "0"])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits for it to stop by itself and returns its last stderr line.
    fn refused(mut self) -> String {
        let out = wait_until(Duration::from_secs(30), "the agent to stop", || {
            self.child
                .try_wait()
                .unwrap()
                .ok_or_else(|| "still running".to_string())
        });
        assert!(!out.success(), "a refused agent exits non-zero");
        let mut err = String::new();
        use std::io::Read as _;
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err.lines().last().unwrap_or_default().to_string()
    }

    /// Waits until its node is Ready.
    fn wait_ready(&mut self, s: &Server) {
        let name = self.name.clone();
        wait_until(
            Duration::from_secs(60),
            &format!("node {name} Ready"),
            || {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("the agent exited with {status}");
                }
                let out = s.kubectl(Kubectl::V132).run(&[
                    "get",
                    "node",
                    &name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                (out.stdout.trim() == "True")
                    .then_some(())
                    .ok_or(out.stderr)
            },
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `skiff token ARGS` against `s`.
fn skiff_token(s: &Server, args: &[&str]) -> crate::harness::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.arg("token")
        .args(args)
        .arg("--kubeconfig")
        .arg(s.kubeconfig());
    crate::harness::run_command(cmd, None, Duration::from_secs(30))
}

/// Bootstrap tokens join agents until they expire or are deleted; the rotated server
/// token joins new agents, the old one no longer does, and a node that joined before
/// keeps working.
#[test]
fn tokens_join_agents_until_deleted_expired_or_rotated() {
    let s = Server::start();
    let server_token = std::fs::read_to_string(s.data_dir().join("server/token"))
        .unwrap()
        .trim()
        .to_string();
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/ca.crt")).unwrap();
    let hash = hex::encode(sha2::Sha256::digest(ca.as_bytes()));

    // A bootstrap token: K10<hash>::<id>.<secret>, listed with its description.
    let created = skiff_token(&s, &["create", "--ttl", "2h", "--description", "the pi"]);
    let token = created.ok().trim().to_string();
    let (prefix, credentials) = token.split_once("::").unwrap();
    assert_eq!(prefix, format!("K10{hash}"));
    let (id, _) = credentials.split_once('.').unwrap();
    let listed = skiff_token(&s, &["list"]);
    let line = listed
        .ok()
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{listed:?}"))
        .to_string();
    assert!(
        line.contains("authentication,signing") && line.contains("the pi"),
        "{line}"
    );

    let mut first = Agent::start(&s, &token, "boot-a");
    first.wait_ready(&s);

    // Deleted: it joins no more.
    skiff_token(&s, &["delete", id]).ok();
    let last = Agent::start(&s, &token, "boot-b").refused();
    assert!(last.contains(&format!("no bootstrap token {id}")), "{last}");
    let missing = skiff_token(&s, &["delete", id]);
    assert!(missing.err().contains("no such token"), "{missing:?}");

    // Expired: listed as such until the token cleaner removes it; refused either way.
    let short = skiff_token(&s, &["create", "--ttl", "1s"]);
    let short = short.ok().trim().to_string();
    let short_id = short
        .rsplit("::")
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    wait_until(Duration::from_secs(10), "the token to expire", || {
        let out = skiff_token(&s, &["list"]);
        let line = out
            .ok()
            .lines()
            .find(|l| l.starts_with(&short_id))
            .map(String::from);
        match line {
            Some(l) if l.contains("<expired>") => Ok(()),
            None => Ok(()),
            Some(l) => Err(l),
        }
    });
    let last = Agent::start(&s, &short, "boot-c").refused();
    assert!(
        last.contains("expired at") || last.contains(&format!("no bootstrap token {short_id}")),
        "{last}"
    );

    // Rotation: the old server token is refused, the new one joins, the node that
    // joined before restarts as itself.
    let rotated = skiff_token(&s, &["rotate"]);
    let new_token = rotated.ok().trim().to_string();
    assert!(
        new_token.starts_with(&format!("K10{hash}::server:")),
        "{new_token}"
    );
    assert_ne!(new_token, server_token);
    assert_eq!(
        std::fs::read_to_string(s.data_dir().join("server/token"))
            .unwrap()
            .trim(),
        new_token
    );
    let last = Agent::start(&s, &server_token, "rot-a").refused();
    assert!(last.contains("the join token was refused"), "{last}");
    let mut fresh = Agent::start(&s, &new_token, "rot-b");
    fresh.wait_ready(&s);
    let _ = first.child.kill();
    let _ = first.child.wait();
    first.child = Agent::spawn(&s, &token, first.dir.path(), "boot-a");
    first.wait_ready(&s);
}

/// An agent started while its server is down keeps trying, and joins once the server
/// is back.
#[test]
fn an_agent_waits_for_its_server() {
    let mut s = Server::start();
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).unwrap();
    s.stop();
    let mut agent = Agent::start(&s, token.trim(), "patient");
    // It says it cannot join yet, twice (with a back-off between), and keeps running.
    let stderr = agent.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("cannot join yet") && tx.send(line).is_err() {
                return;
            }
        }
    });
    for attempt in 1..=2 {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no failed attempt #{attempt}: {e}"));
    }
    let cert = agent.dir.path().join("agent/tls/client-node.crt");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent gave up"
    );
    assert!(!cert.exists());
    s.start_again();
    agent.wait_ready(&s);
    assert!(cert.exists());
}
