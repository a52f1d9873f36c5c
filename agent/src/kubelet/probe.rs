//! Container probes (liveness, readiness, startup), as upstream's kubelet runs them:
//! exec in the container, tcpSocket and httpGet against the pod's network namespace,
//! with initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold and
//! failureThreshold. The bookkeeping ([`Tracker`]) is pure; [`check`] does one probe.
//!
//! Until the pod network exists, a pod's network namespace has only its loopback, so
//! network probes connect to 127.0.0.1 from a thread that has entered the namespace
//! (the thread ends after the probe, taking its namespace with it).

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The state of one probe of one container run.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// The latest verdict: None until the first one.
    pub result: Option<bool>,
    successes: i32,
    failures: i32,
    /// When the next probe is due.
    pub next: Instant,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

impl Tracker {
    /// A probe of a container that started at `started`.
    pub fn new(probe: &Probe, started: Instant) -> Tracker {
        Tracker {
            result: None,
            successes: 0,
            failures: 0,
            next: started + secs(probe.initial_delay_seconds, 0),
        }
    }

    /// Records one outcome at `now`; returns whether the verdict changed.
    pub fn record(&mut self, probe: &Probe, ok: bool, now: Instant) -> bool {
        self.next = now + secs(probe.period_seconds, 10).max(Duration::from_secs(1));
        let before = self.result;
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                self.result = Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                self.result = Some(false);
            }
        }
        before != self.result
    }
}

/// The probe's timeout.
pub fn timeout(probe: &Probe) -> Duration {
    secs(probe.timeout_seconds, 1).max(Duration::from_secs(1))
}

/// A port of a probe: a number, or the name of one of the container's ports.
fn port(p: &IntOrString, ports: &[(String, i32)]) -> Result<u16, String> {
    let n = match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => ports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("no port named {name:?}"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {n} is out of range"))
}

/// How a network probe reaches the pod.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's network namespace file; None for hostNetwork pods.
    pub netns: Option<PathBuf>,
    /// The container's named ports.
    pub ports: Vec<(String, i32)>,
}

/// Runs a network probe (tcpSocket or httpGet) on a thread of its own; `None` when the
/// probe is not a network one.
pub async fn check_network(probe: &Probe, target: &Target) -> Option<Result<(), String>> {
    enum Kind {
        Tcp(u16),
        Http(u16, String, Vec<(String, String)>),
    }
    let kind = if let Some(t) = &probe.tcp_socket {
        match port(&t.port, &target.ports) {
            Ok(p) => Kind::Tcp(p),
            Err(e) => return Some(Err(e)),
        }
    } else if let Some(h) = &probe.http_get {
        let p = match port(&h.port, &target.ports) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let path = h
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        let headers = h
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        Kind::Http(p, path, headers)
    } else {
        return None;
    };
    let limit = timeout(probe);
    let netns = target.netns.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            if let Some(ns) = &netns {
                let f = std::fs::File::open(ns)
                    .map_err(|e| format!("opening the pod's network: {e}"))?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering the pod's network: {e}"))?;
            }
            match kind {
                Kind::Tcp(p) => connect(p, limit).map(|_| ()),
                Kind::Http(p, path, headers) => http_get(p, &path, &headers, limit),
            }
        })();
        let _ = tx.send(result);
    });
    Some(
        rx.await
            .unwrap_or_else(|_| Err("the probe's thread failed".into())),
    )
}

fn connect(port: u16, limit: Duration) -> Result<TcpStream, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("dial tcp {addr}: {e}"))
}

/// An HTTP/1.1 GET; success is a status from 200 to 399, as upstream.
fn http_get(
    port: u16,
    path: &str,
    headers: &[(String, String)],
    limit: Duration,
) -> Result<(), String> {
    let mut stream = connect(port, limit)?;
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("sending the probe: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("reading the probe's answer: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn thresholds_and_timing() {
        let p = probe(
            serde_json::json!({"exec": {"command": ["true"]}, "initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 2, "successThreshold": 1}),
        );
        let t0 = Instant::now();
        let mut t = Tracker::new(&p, t0);
        assert_eq!(t.next, t0 + Duration::from_secs(5));
        assert!(t.record(&p, true, t0));
        assert_eq!(t.result, Some(true));
        assert_eq!(t.next, t0 + Duration::from_secs(2));
        assert!(
            !t.record(&p, false, t0),
            "one failure is below the threshold"
        );
        assert!(t.record(&p, false, t0));
        assert_eq!(t.result, Some(false));
    }

    #[test]
    fn ports_by_name() {
        let ports = vec![("http".to_string(), 8080)];
        assert_eq!(port(&IntOrString::String("http".into()), &ports), Ok(8080));
        assert_eq!(port(&IntOrString::Int(80), &ports), Ok(80));
        assert!(port(&IntOrString::String("nope".into()), &ports).is_err());
        assert!(port(&IntOrString::Int(0), &ports).is_err());
    }

    #[tokio::test]
    async fn tcp_and_http_on_the_host() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().take(2) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ =
                    s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let target = Target {
            netns: None,
            ports: vec![],
        };
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": p}}));
        assert_eq!(check_network(&tcp, &target).await, Some(Ok(())));
        let http = probe(serde_json::json!({"httpGet": {"port": p, "path": "/healthz"}}));
        let got = check_network(&http, &target).await.unwrap();
        assert!(got.unwrap_err().contains("503"));
    }
}
