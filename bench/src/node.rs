//! The node suite: `skiff server` running its node in-process, pods as real containers
//! (one `skiff shim` process each), from a busybox image imported from the node's
//! air-gap folder at start.
//!
//! - Pod start latency with the image present: pods created one after another, each
//!   waited for until a watch shows it Running, then deleted and its container waited
//!   for until gone before the next is created, so no two starts or a start and a
//!   teardown overlap. Beside it, Debian's `crun run` of the same rootfs ([`crate::crun`]).
//! - Memory: the server's RSS with its node running pods, against the same server with
//!   `--disable-agent` and the same pods on a node `skiff sim-nodes` simulates; the
//!   difference is the node's share. And each shim's private memory.
//!
//! Every server is stopped with SIGTERM, then `skiff killall` stops what its node left
//! running, and the pods' logs under `/var/log/pods` are removed.

use crate::scale::{is_ready, post, rss_mib, Sim};
use crate::{crun, image, keep_if_mounted, ms, stop_node, target, Conn, Server, Stats, Target};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the suite is asked for.
pub struct Plan<'a> {
    /// The skiff binary.
    pub skiff: &'a Path,
    /// Pods started one after another for the latency, and runs of crun.
    pub start_pods: usize,
    /// Pods running while memory is measured.
    pub running_pods: usize,
    /// The pods' `imagePullPolicy`.
    pub pull_policy: &'a str,
}

/// The node's name.
const NODE: &str = "bench";
/// The bench's pods are named `<PREFIX><n>` in the `default` namespace.
const PREFIX: &str = "nodebench-";
/// How long a pod may take to reach Running, or a container to go, before the run fails.
const LIMIT: Duration = Duration::from_secs(60);

/// A pod as the node suite runs it: busybox sleeping, never restarted, killed at once,
/// with the image pull policy `pull` (`IfNotPresent`: the image on the node is used as
/// it is; `Always`, the default for `busybox`, asks the registry first on every start).
fn sleeper(name: &str, pull: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "nodebench"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": pull,
                            "command": ["sh", "-c", "sleep 3600"]}]
        }
    })
}

/// A server for the suite. Dropping it stops the server with SIGTERM and, if it ran a
/// node, its containers with `skiff killall`, and removes the pods' logs.
struct NodeServer {
    server: Server,
    /// It runs its node in-process (else `--disable-agent`).
    agent: bool,
    target: Target,
}

impl NodeServer {
    /// Starts a server on a free port with its data dir and log in a fresh folder; with
    /// `layer`, it runs its node and finds the image made of it in its air-gap folder.
    fn start(skiff: &Path, layer: Option<&[u8]>) -> Result<NodeServer> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-node-")
            .tempdir()?;
        let mut extra = vec!["--disable-agent"];
        if let Some(layer) = layer {
            let images = dir.path().join("data/agent/images");
            std::fs::create_dir_all(&images)?;
            image::write_oci(layer, &images.join("busybox.tar"))?;
            extra = vec![
                "--node-name",
                NODE,
                "--node-ip",
                "127.0.0.1",
                "--kubelet-port",
                "0",
            ];
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.path().join("server.log");
        let server = Server::start_in(dir, skiff, port, &extra, Some(log))?;
        let target = target(&server.kubeconfig, port)?;
        Ok(NodeServer {
            server,
            agent: layer.is_some(),
            target,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.server.dir.path().join("data")
    }

    fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// Waits until the node `name` is Ready; answers how long it took.
    async fn node_ready(&self, name: &str) -> Result<Duration> {
        let start = Instant::now();
        let mut c = Conn::open(&self.target).await?;
        loop {
            let (code, body) = c
                .call("GET", &format!("/api/v1/nodes/{name}"), None)
                .await?;
            if code == 200 && is_ready(&serde_json::from_slice(&body)?) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > LIMIT {
                bail!("node {name} not Ready within {LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many containers the node has on disk.
    fn containers(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("agent/containers"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The warnings and errors in the server's log: their count and the first few
    /// distinct messages.
    fn log_summary(&self) -> String {
        let Some(log) = &self.server.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut seen = Vec::<String>::new();
        let (mut warns, mut errors) = (0, 0);
        for line in text.lines() {
            // `<time>  WARN <target>: <message>`: drop the time.
            let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
            if rest.starts_with("WARN") {
                warns += 1;
            } else if rest.starts_with("ERROR") {
                errors += 1;
            } else {
                continue;
            }
            if seen.len() < 8 && !seen.iter().any(|s| s == rest) {
                seen.push(rest.to_string());
            }
        }
        let mut out = format!("{errors} errors, {warns} warnings");
        for s in seen {
            out.push_str("\n    ");
            out.push_str(&s.chars().take(300).collect::<String>());
        }
        out
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        if let Err(e) = self.server.terminate() {
            eprintln!("stopping the server: {e:#}");
        }
        if !self.agent {
            return;
        }
        stop_node(&self.server.skiff, &self.data_dir());
        keep_if_mounted(&mut self.server.dir);
    }
}

/// What one watch event says about a pod.
struct Event {
    /// When the bench read it.
    at: Instant,
    name: String,
    deleted: bool,
    /// `spec.nodeName` is set.
    bound: bool,
    /// `status.hostIP` is set: the node has written the pod's status.
    node_wrote: bool,
    phase: String,
}

/// Watches the pods of `default` from `rv` on, sending each event on `tx`.
async fn watch_pods(t: Target, rv: String, tx: mpsc::UnboundedSender<Event>) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(&t.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!(
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"
        ))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let resp = send.send_request(req).await?;
    if resp.status() != 200 {
        bail!("the pod watch answered {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            buf.extend_from_slice(d);
        }
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let at = Instant::now();
            let ev: Value = serde_json::from_slice(&line)?;
            let pod = &ev["object"];
            let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let set = |p: &str| {
                pod.pointer(p)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            };
            let event = Event {
                at,
                name: name.to_string(),
                deleted: ev["type"] == "DELETED",
                bound: set("/spec/nodeName"),
                node_wrote: set("/status/hostIP"),
                phase: pod
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            };
            if tx.send(event).is_err() {
                return Ok(());
            }
        }
    }
    bail!("the pod watch ended")
}

/// Starts a watch of `default`'s pods from now on.
async fn pod_events(
    t: &Target,
) -> Result<(
    mpsc::UnboundedReceiver<Event>,
    tokio::task::JoinHandle<Result<()>>,
)> {
    let mut c = Conn::open(t).await?;
    let (code, body) = c
        .call("GET", "/api/v1/namespaces/default/pods?limit=1", None)
        .await?;
    if code != 200 {
        bail!("listing pods answered {code}");
    }
    let rv = serde_json::from_slice::<Value>(&body)?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(watch_pods(t.clone(), rv, tx));
    Ok((rx, task))
}

/// The next event, or an error if none comes within [`LIMIT`].
async fn next(rx: &mut mpsc::UnboundedReceiver<Event>, what: &str) -> Result<Event> {
    match tokio::time::timeout(LIMIT, rx.recv()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => bail!("the pod watch ended while waiting for {what}"),
        Err(_) => bail!("no pod event within {LIMIT:?} while waiting for {what}"),
    }
}

/// When one pod reached each step, from the moment its create was sent.
struct Start {
    answered: Duration,
    bound: Duration,
    node_wrote: Duration,
    running: Duration,
    /// From the delete sent to its container gone from the node's disk.
    gone: Duration,
}

/// Creates a pod, waits until it is Running, deletes it and waits until its container is
/// gone.
async fn start_one(
    s: &NodeServer,
    c: &mut Conn,
    rx: &mut mpsc::UnboundedReceiver<Event>,
    name: &str,
    pull: &str,
) -> Result<Start> {
    let sent = Instant::now();
    post(c, "/api/v1/namespaces/default/pods", &sleeper(name, pull)).await?;
    let answered = sent.elapsed();
    let (mut bound, mut node_wrote) = (None, None);
    let running = loop {
        let e = next(rx, &format!("{name} Running")).await?;
        if e.name != name {
            continue;
        }
        let since = e.at.duration_since(sent);
        if e.bound {
            bound.get_or_insert(since);
        }
        if e.node_wrote {
            node_wrote.get_or_insert(since);
        }
        match e.phase.as_str() {
            "Running" => break since,
            "Succeeded" | "Failed" => bail!("{name} ended {} before Running", e.phase),
            _ if e.deleted => bail!("{name} was deleted before Running"),
            _ => {}
        }
    };

    // As `kubectl delete pod` does: no grace period given, so the pod's own (0) applies
    // and the node finishes the deletion once its container is stopped.
    let deleting = Instant::now();
    let (code, body) = c
        .call(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        )
        .await?;
    if code != 200 && code != 202 {
        bail!(
            "deleting {name} answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    loop {
        let e = next(rx, &format!("{name} deleted")).await?;
        if e.name == name && e.deleted {
            break;
        }
    }
    while s.containers() > 0 {
        if deleting.elapsed() > LIMIT {
            bail!("{name}'s container still on disk {LIMIT:?} after its delete");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(Start {
        answered,
        bound: bound.unwrap_or(running),
        node_wrote: node_wrote.unwrap_or(running),
        running,
        gone: deleting.elapsed(),
    })
}

/// Creates `n` pods, one request after another, and waits until all are Running; answers
/// how long from the first create to the last Running.
async fn run_pods(
    c: &mut Conn,
    rx: &mut mpsc::UnboundedReceiver<Event>,
    n: usize,
    pull: &str,
) -> Result<Duration> {
    let start = Instant::now();
    for i in 0..n {
        post(
            c,
            "/api/v1/namespaces/default/pods",
            &sleeper(&format!("{PREFIX}run-{i}"), pull),
        )
        .await?;
    }
    let mut running = HashSet::new();
    while running.len() < n {
        let e = next(rx, &format!("{n} pods Running ({} so far)", running.len())).await?;
        if e.phase == "Running" {
            running.insert(e.name);
        } else if e.phase == "Succeeded" || e.phase == "Failed" {
            bail!("{} ended {}", e.name, e.phase);
        }
    }
    Ok(start.elapsed())
}

/// A `skiff shim` process of the node whose data dir is `data_dir`, with its memory.
struct Shim {
    /// Private_Clean + Private_Dirty, KiB.
    private_kib: u64,
    /// RSS (shared pages counted whole), KiB.
    rss_kib: u64,
}

/// The shims of the node whose data dir is `data_dir`: processes whose command line is
/// `<skiff> shim <dir under data_dir>`.
fn shims(data_dir: &Path) -> Vec<Shim> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let ours = args.len() >= 3
            && args[1] == b"shim"
            && Path::new(&*String::from_utf8_lossy(args[2])).starts_with(data_dir);
        if !ours {
            continue;
        }
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |name: &str| -> u64 {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        out.push(Shim {
            private_kib: field("Private_Clean:") + field("Private_Dirty:"),
            rss_kib: field("Rss:"),
        });
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().map(str::to_string))
        .unwrap_or_default()
}

/// Runs the suite and prints each figure.
pub async fn run(plan: Plan<'_>) -> Result<()> {
    let layer = image::layer()?;
    let pull = plan.pull_policy;
    println!("load average (1 min) at start: {}", load());

    // The baseline first, with no server running beside it.
    let n = plan.start_pods;
    let base = {
        let layer = layer.clone();
        tokio::task::spawn_blocking(move || crun::run(&layer, n)).await??
    };
    println!(
        "crun run of the same busybox rootfs (/bin/true, no terminal), {n} runs from one shell in a mount namespace: p50 {}, p99 {}",
        ms(base.in_namespace.pct(0.5)),
        ms(base.in_namespace.pct(0.99))
    );
    println!(
        "  each run in its own unshare -m sh -c 'umount …; exec crun run …': p50 {}, p99 {}; the wrapper alone (exec true): p50 {}, p99 {}",
        ms(base.wrapped.pct(0.5)),
        ms(base.wrapped.pct(0.99)),
        ms(base.wrapper.pct(0.5)),
        ms(base.wrapper.pct(0.99))
    );

    // Pod start latency.
    let s = NodeServer::start(plan.skiff, Some(&layer))?;
    println!(
        "node {NODE} Ready {:.2} s after the API served",
        s.node_ready(NODE).await?.as_secs_f64()
    );
    let (mut rx, watch) = pod_events(&s.target).await?;
    let mut c = Conn::open(&s.target).await?;
    // One pod before the measured ones: the first start after the node's start.
    let first = start_one(&s, &mut c, &mut rx, &format!("{PREFIX}first"), pull).await?;
    println!(
        "first pod after start (not counted): Running {} after its create",
        ms(first.running)
    );
    let mut starts = Vec::with_capacity(n);
    for i in 0..n {
        starts.push(start_one(&s, &mut c, &mut rx, &format!("{PREFIX}{i}"), pull).await?);
    }
    watch.abort();
    let stat = |f: fn(&Start) -> Duration| Stats::new(starts.iter().map(f).collect());
    let running = stat(|s| s.running);
    println!(
        "pod start (imagePullPolicy {pull}), create sent → Running on a watch, {n} pods one after another: p50 {}, p99 {} (goal p50 <= 150 ms, p99 <= 500 ms)",
        ms(running.pct(0.5)),
        ms(running.pct(0.99))
    );
    let (answered, bound, wrote) = (
        stat(|s| s.answered),
        stat(|s| s.bound),
        stat(|s| s.node_wrote),
    );
    println!(
        "  p50 (p99) from the create sent: create answered {} ({}), bound seen {} ({}), the node's first status seen {} ({}), Running seen {} ({})",
        ms(answered.pct(0.5)),
        ms(answered.pct(0.99)),
        ms(bound.pct(0.5)),
        ms(bound.pct(0.99)),
        ms(wrote.pct(0.5)),
        ms(wrote.pct(0.99)),
        ms(running.pct(0.5)),
        ms(running.pct(0.99)),
    );
    let gone = stat(|s| s.gone);
    println!(
        "  delete sent → container gone from the node's disk: p50 {}, p99 {}",
        ms(gone.pct(0.5)),
        ms(gone.pct(0.99))
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "ratio skiff pod start / crun run: p50 {:.2}, p99 {:.2}",
        ratio(running.pct(0.5), base.in_namespace.pct(0.5)),
        ratio(running.pct(0.99), base.in_namespace.pct(0.99))
    );
    println!("  server log: {}", s.log_summary());
    println!("load average (1 min) after the starts: {}", load());
    drop(c);
    drop(s);

    // Memory with the node running pods.
    let pods = plan.running_pods;
    let s = NodeServer::start(plan.skiff, Some(&layer))?;
    s.node_ready(NODE).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_node = rss_mib(s.pid())?;
    let (mut rx, watch) = pod_events(&s.target).await?;
    let mut c = Conn::open(&s.target).await?;
    let took = run_pods(&mut c, &mut rx, pods, pull).await?;
    watch.abort();
    // Let the node's status writes and the controllers go quiet.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let with_node = rss_mib(s.pid())?;
    let mut shim = shims(&s.data_dir());
    shim.sort_by_key(|s| s.private_kib);
    println!(
        "{pods} pods created one request after another, all Running {:.2} s after the first create",
        took.as_secs_f64()
    );
    println!("server with its node: RSS {idle_node:.1} MiB idle, {with_node:.1} MiB with {pods} pods running");
    if shim.is_empty() {
        println!("shims: none found (no process `<skiff> shim <dir under the data dir>`)");
    } else {
        let private: Vec<u64> = shim.iter().map(|s| s.private_kib).collect();
        let mut rss: Vec<u64> = shim.iter().map(|s| s.rss_kib).collect();
        rss.sort();
        println!(
            "shims: {} processes; private memory (Private_Clean+Private_Dirty) min {}, median {}, max {} (goal <= 2 MB each); RSS median {}",
            shim.len(),
            mib(private[0]),
            mib(private[private.len() / 2]),
            mib(private[private.len() - 1]),
            mib(rss[rss.len() / 2]),
        );
    }
    println!("  server log: {}", s.log_summary());
    drop(c);
    drop(s);

    // The same pods on a simulated node, the server without its agent.
    let s = NodeServer::start(plan.skiff, None)?;
    let sim = Sim(Command::new(plan.skiff)
        .arg("sim-nodes")
        .arg("--kubeconfig")
        .arg(&s.server.kubeconfig)
        .args(["--count", "1", "--name-prefix", NODE, "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting skiff sim-nodes")?);
    s.node_ready(&format!("{NODE}0")).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_sim = rss_mib(s.pid())?;
    let (mut rx, watch) = pod_events(&s.target).await?;
    let mut c = Conn::open(&s.target).await?;
    run_pods(&mut c, &mut rx, pods, pull).await?;
    watch.abort();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let without = rss_mib(s.pid())?;
    println!(
        "server with --disable-agent, the pods on a simulated node: RSS {idle_sim:.1} MiB idle, {without:.1} MiB with {pods} pods running (simulator RSS {:.1} MiB)",
        rss_mib(sim.0.id())?
    );
    println!(
        "the node's share of the server's RSS with {pods} pods: {:.1} MiB (idle: {:.1} MiB) (goal <= 30 MB)",
        with_node - without,
        idle_node - idle_sim
    );
    println!("  server log: {}", s.log_summary());
    drop(sim);
    drop(c);
    drop(s);
    Ok(())
}
