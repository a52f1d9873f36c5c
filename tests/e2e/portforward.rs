//! `kubectl port-forward` to a pod on the in-process node: busybox's httpd in the pod,
//! fetched over plain HTTP from kubectl's local port. kubectl 1.32 and the current one
//! tunnel SPDY in a WebSocket; kubectl 1.32 told not to (`KUBECTL_PORT_FORWARD_WEBSOCKETS
//! =false`) upgrades to SPDY directly. A 1 MB body crosses SPDY's 64 KiB flow-control
//! window many times over. Needs root, as CI is.

use crate::harness::{wait_until, Background, Cases, Kubectl, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Convergence on a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);
/// How many numbers `/big` holds: about 1 MB.
const BIG_LINES: u32 = 150_000;

/// What the pod's `/big` holds: `seq 1 BIG_LINES`.
fn big() -> Vec<u8> {
    (1..=BIG_LINES)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// An HTTP/1.0 GET of `path` through 127.0.0.1:`port`: the status line and the body.
fn get(port: u16, path: &str) -> Result<(String, Vec<u8>), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(SOON)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .map_err(|e| format!("reading the answer after {} bytes: {e}", all.len()))?;
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&all)))?;
    let head = String::from_utf8_lossy(&all[..at]);
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, all[at + 4..].to_vec()))
}

/// Starts `kubectl port-forward pod/web :<remote>` and returns it with the local port it
/// chose (from its "Forwarding from 127.0.0.1:PORT -> REMOTE" line).
fn forward(s: &Server, k: Kubectl, remote: u16, spdy_only: bool) -> (Background, u16) {
    let mut cmd = s.kubectl(k);
    if spdy_only {
        cmd = cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    }
    let mut bg = cmd.spawn(&["port-forward", "pod/web", &format!(":{remote}")]);
    let line = bg.wait_for_line(SOON, |l| l.starts_with("Forwarding from 127.0.0.1:"));
    let port = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"));
    (bg, port)
}

/// Small pages, a 1 MB body, and three bodies at once, through one kubectl.
fn fetches(port: u16) {
    for i in 0..5 {
        let (status, body) = get(port, "/index.html").unwrap_or_else(|e| panic!("get {i}: {e}"));
        assert!(status.contains(" 200 "), "{status}");
        assert_eq!(String::from_utf8_lossy(&body), "hello from the pod\n");
    }
    let want = big();
    let (status, body) = get(port, "/big").unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body.len(), want.len(), "the whole body");
    assert!(body == want, "the body, byte for byte");
    let fetchers: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get(port, "/big")))
        .collect();
    for f in fetchers {
        let (_, body) = f.join().unwrap().unwrap();
        assert!(body == want, "a concurrent body, byte for byte");
    }
}

#[test]
fn kubectl_port_forward_reaches_the_pod() {
    let s = Server::start_node(&[]);
    let script = format!(
        "mkdir -p /www && echo hello from the pod > /www/index.html && \
         seq 1 {BIG_LINES} > /www/big && exec httpd -f -p 8080 -h /www"
    );
    s.kubectl(Kubectl::V132)
        .stdin(
            json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "httpd", "image": "busybox",
                    "command": ["sh", "-c", script],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                }]}
            })
            .to_string(),
        )
        .run(&["apply", "-f", "-"])
        .ok();
    wait_until(SOON, "pod web ready", || {
        let out = s
            .kubectl(Kubectl::V132)
            .run(&["get", "pod", "web", "-o", "json"]);
        let p: Value = serde_json::from_str(&out.stdout).map_err(|_| out.stderr.clone())?;
        if p["status"]["containerStatuses"][0]["ready"] == true {
            Ok(())
        } else {
            Err(p["status"].to_string())
        }
    });

    let mut cases = Cases::default();
    for (name, k, spdy_only) in [
        ("kubectl 1.32, SPDY in a WebSocket", Kubectl::V132, false),
        (
            "current kubectl, SPDY in a WebSocket",
            Kubectl::Current,
            false,
        ),
        ("kubectl 1.32, SPDY", Kubectl::V132, true),
    ] {
        cases.case(name, || {
            let (mut bg, port) = forward(&s, k, 8080, spdy_only);
            fetches(port);
            bg.stop();
        });
    }
    cases.case("a port nobody listens on is reported", || {
        let (mut bg, port) = forward(&s, Kubectl::V132, 9999, false);
        // The connection is accepted locally, then closed without an answer.
        assert!(get(port, "/").is_err());
        let stderr = bg.stop();
        assert!(
            stderr.contains("error forwarding port 9999 to pod web"),
            "{stderr}"
        );
    });
    cases.case("a pod that does not exist", || {
        let out = s
            .kubectl(Kubectl::V132)
            .run(&["port-forward", "pod/nosuch", ":8080"]);
        assert!(!out.status.success());
        assert!(out.stderr.contains("not found"), "{}", out.stderr);
    });
    cases.finish();
}
