//! The scale suite: one server, `skiff sim-nodes` registering many simulated nodes, and
//! the control plane measured while it schedules, runs and holds tens of thousands of
//! pods: scheduling throughput, a large Deployment from create to all Ready (and where
//! the time goes), and memory and write latency of the steady cluster.

use crate::{ms, target, Conn, Server, Stats, Target};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the suite is asked for.
pub struct Plan<'a> {
    /// The skiff binary.
    pub skiff: &'a Path,
    /// The server's port.
    pub port: u16,
    /// Simulated nodes.
    pub nodes: usize,
    /// Bare pods in each of the two scheduling runs (while creating, and as a backlog).
    pub sched_pods: usize,
    /// Replicas of the large Deployment.
    pub replicas: usize,
    /// Pods in the cluster when it is measured steady.
    pub total_pods: usize,
    /// Concurrent clients creating pods.
    pub clients: usize,
}

/// When each pod was first seen created, bound and Ready, from one watch.
#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
}

/// The simulator process, stopped when dropped.
pub(crate) struct Sim(pub(crate) Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("reading VmRSS")?;
    Ok(kib as f64 / 1024.0)
}

fn bare_pod(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "sched"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    })
}

fn deployment(name: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "scale"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.local/app:1",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    })
}

/// Follows every pod from `rv` on, stamping the first time each is seen created, bound
/// and Ready.
async fn follow_pods(t: &Target, rv: &str, seen: Arc<Mutex<Seen>>) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(&t.addr).await?;
    let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!(
            "/api/v1/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=false"
        ))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let mut body = send.send_request(req).await?.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            buf.extend_from_slice(d);
        }
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let now = Instant::now();
            let ev: Value = serde_json::from_slice(&line)?;
            let pod = &ev["object"];
            let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let mut s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            s.created.entry(name.to_string()).or_insert(now);
            if pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            {
                s.bound.entry(name.to_string()).or_insert(now);
            }
            if is_ready(pod) {
                s.ready.entry(name.to_string()).or_insert(now);
            }
        }
    }
    Ok(())
}

/// Polls `check` every 200 ms until it answers true or `limit` passes.
async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The times in `m` of the pods whose name starts with `prefix`, sorted.
fn times(m: &HashMap<String, Instant>, prefix: &str) -> Vec<Instant> {
    let mut v: Vec<Instant> = m
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, t)| *t)
        .collect();
    v.sort();
    v
}

/// Waits until `n` pods named `prefix…` are bound; answers their bind times, sorted.
/// How many of `times` fall in each whole second after `start`, space-separated.
fn per_second(times: &[Instant], start: Instant) -> String {
    let mut counts: Vec<usize> = Vec::new();
    for t in times {
        let s = t.saturating_duration_since(start).as_secs() as usize;
        if counts.len() <= s {
            counts.resize(s + 1, 0);
        }
        counts[s] += 1;
    }
    counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn wait_bound(seen: &Mutex<Seen>, prefix: &str, n: usize) -> Result<Vec<Instant>> {
    let bound = || {
        seen.lock()
            .map(|s| times(&s.bound, prefix))
            .unwrap_or_default()
    };
    wait_for(
        &format!("every {prefix} pod bound"),
        Duration::from_secs(300),
        || bound().len() >= n,
    )
    .await?;
    Ok(bound())
}

pub(crate) async fn post(c: &mut Conn, path: &str, body: &Value) -> Result<()> {
    let (code, resp) = c.call("POST", path, Some(body)).await?;
    if code != 201 {
        bail!(
            "POST {path} answered {code}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    Ok(())
}

/// Whether a pod or node has the condition Ready=True.
pub(crate) fn is_ready(obj: &Value) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

async fn ready_nodes(c: &mut Conn) -> Result<usize> {
    let (code, body) = c.call("GET", "/api/v1/nodes", None).await?;
    if code != 200 {
        bail!("listing nodes answered {code}");
    }
    let v: Value = serde_json::from_slice(&body)?;
    Ok(v["items"]
        .as_array()
        .map_or(0, |items| items.iter().filter(|n| is_ready(n)).count()))
}

/// Creates `per * clients` bare pods named `<prefix><client>-<i>`, `clients` at a time.
async fn create_pods(t: &Target, prefix: &str, per: usize, clients: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (t, prefix) = (t.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&t).await?;
            for i in 0..per {
                post(
                    &mut c,
                    "/api/v1/namespaces/sched/pods",
                    &bare_pod("sched", &format!("{prefix}{w}-{i}")),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn deployment_ready(c: &mut Conn, name: &str) -> Result<u64> {
    let (code, body) = c
        .call(
            "GET",
            &format!("/apis/apps/v1/namespaces/scale/deployments/{name}"),
            None,
        )
        .await?;
    if code != 200 {
        bail!("reading deployment {name} answered {code}");
    }
    let v: Value = serde_json::from_slice(&body)?;
    Ok(v.pointer("/status/readyReplicas")
        .and_then(Value::as_u64)
        .unwrap_or(0))
}

/// Runs the suite and prints each figure.
pub async fn run(plan: Plan<'_>) -> Result<()> {
    // The scheduler is off until the backlog is in place (see below).
    let mut server = Server::start_with(plan.skiff, plan.port, &["--disable-scheduler"])?;
    let t = target(&server.kubeconfig, plan.port)?;
    let mut c = Conn::open(&t).await?;

    // The nodes.
    let started = Instant::now();
    let sim = Sim(Command::new(plan.skiff)
        .arg("sim-nodes")
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(["--count", &plan.nodes.to_string(), "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting skiff sim-nodes")?);
    let deadline = Instant::now() + Duration::from_secs(300);
    while ready_nodes(&mut c).await? < plan.nodes {
        if Instant::now() > deadline {
            bail!("the simulated nodes were not Ready within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{} simulated nodes Ready in {:.1} s",
        plan.nodes,
        started.elapsed().as_secs_f64()
    );

    for ns in ["sched", "scale"] {
        post(
            &mut c,
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    // Scheduling a backlog: pods created while no scheduler runs, then the server
    // restarted with its scheduler, which finds them all pending at once. Nothing else
    // competes with the binds, and no pod has failed (and backed off) before.
    let per = plan.sched_pods.div_ceil(plan.clients);
    let n = per * plan.clients;
    create_pods(&t, "backlog-", per, plan.clients).await?;
    let restart = Instant::now();
    server.restart(&[]).await?;
    let up = Instant::now();
    let mut c = Conn::open(&t).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = {
        let (t, seen) = (t.clone(), seen.clone());
        tokio::spawn(async move { follow_pods(&t, "", seen).await })
    };
    let bound = wait_bound(&seen, "backlog-", n).await?;
    let (first, last) = (bound[0], bound[bound.len() - 1]);
    println!(
        "  binds in each second after the restarted server was ready: {}",
        per_second(&bound, up)
    );
    println!(
        "scheduling a backlog: {n} pending pods on {} nodes bound {:.2} s after the restarted server was ready ({:.2} s to restart): {:.0} pods/s; {:.0} pods/s from first to last bind (goal >= 1000 pods/s)",
        plan.nodes,
        last.duration_since(up).as_secs_f64(),
        up.duration_since(restart).as_secs_f64(),
        n as f64 / last.duration_since(up).as_secs_f64(),
        n as f64 / last.duration_since(first).as_secs_f64().max(1e-3),
    );

    // Scheduling while creating: bare pods created as fast as the clients can.
    let create_start = Instant::now();
    create_pods(&t, "sched-", per, plan.clients).await?;
    let created_in = create_start.elapsed();
    let bound = wait_bound(&seen, "sched-", n).await?;
    let (first, last) = (bound[0], bound[bound.len() - 1]);
    let window = last.duration_since(first).as_secs_f64().max(1e-3);
    let overall = last.duration_since(create_start).as_secs_f64();
    println!(
        "scheduling while creating: {n} pods created in {:.1} s ({:.0}/s); bound at {:.0} pods/s from first to last bind, {:.0} pods/s from the first create",
        created_in.as_secs_f64(),
        n as f64 / created_in.as_secs_f64(),
        n as f64 / window,
        n as f64 / overall
    );

    // The large Deployment.
    let d_start = Instant::now();
    post(
        &mut c,
        "/apis/apps/v1/namespaces/scale/deployments",
        &deployment("big", plan.replicas),
    )
    .await?;
    let mut ready_at = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    while ready_at.is_none() {
        if deployment_ready(&mut c, "big").await? >= plan.replicas as u64 {
            ready_at = Some(d_start.elapsed());
        } else if Instant::now() > deadline {
            bail!("deployment big not Ready within 900 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (created, bound, ready) = seen
        .lock()
        .map(|s| {
            (
                times(&s.created, "big-"),
                times(&s.bound, "big-"),
                times(&s.ready, "big-"),
            )
        })
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let since = |v: &[Instant]| {
        v.last()
            .map(|t| t.duration_since(d_start).as_secs_f64())
            .unwrap_or(0.0)
    };
    let ready_total = ready_at.map(|d| d.as_secs_f64()).unwrap_or(0.0);
    println!(
        "deployment of {}: all Ready (status.readyReplicas) after {ready_total:.1} s; last pod created at {:.1} s, last bound at {:.1} s, last Ready at {:.1} s ({} created, {} bound, {} Ready seen)",
        plan.replicas,
        since(&created),
        since(&bound),
        since(&ready),
        created.len(),
        bound.len(),
        ready.len(),
    );

    // Fill to the steady size with a second Deployment.
    let rest = plan.total_pods.saturating_sub(2 * n + plan.replicas);
    if rest > 0 {
        post(
            &mut c,
            "/apis/apps/v1/namespaces/scale/deployments",
            &deployment("rest", rest),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(900);
        while deployment_ready(&mut c, "rest").await? < rest as u64 {
            if Instant::now() > deadline {
                bail!("deployment rest not Ready within 900 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let total = 2 * n + plan.replicas + rest;
    // Let the controllers and the simulator go quiet.
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "steady with {} nodes and {total} pods: server RSS {:.1} MiB (goal <= 1024 MiB); simulator RSS {:.1} MiB",
        plan.nodes,
        rss_mib(server.child.id())?,
        rss_mib(sim.0.id())?
    );

    // Single-object writes at 20/s while the cluster is steady (leases renew around it).
    post(
        &mut c,
        "/api/v1/namespaces/default/configmaps",
        &crate::configmap("probe", 0),
    )
    .await?;
    let mut lat = Vec::new();
    let interval = Duration::from_millis(50);
    let start = Instant::now();
    for i in 0..400u32 {
        tokio::time::sleep_until((start + interval * i).into()).await;
        let s = Instant::now();
        let (code, _) = c
            .call(
                "PUT",
                "/api/v1/namespaces/default/configmaps/probe",
                Some(&crate::configmap("probe", i as usize)),
            )
            .await?;
        if code != 200 {
            bail!("probe write answered {code}");
        }
        lat.push(s.elapsed());
    }
    let w = Stats::new(lat);
    println!(
        "single-object writes at 20/s in the steady cluster: p50 {}, p99 {} (goal p99 < 100 ms)",
        ms(w.pct(0.5)),
        ms(w.pct(0.99))
    );
    watcher.abort();
    drop(sim);
    drop(server);
    Ok(())
}
