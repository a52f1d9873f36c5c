//! `skiff-bench`: measures skiff's control plane against a real server over HTTPS, and
//! the same rows written straight into SQLite beside it (the physical limit of the disk
//! and database), and prints each figure with what it is compared to.
//!
//! Run: `cargo run --release -p skiff-bench -- --skiff target/release/skiff`; with
//! `--suite scale` it runs [`scale`] instead: simulated nodes and tens of thousands of
//! pods; with `--suite node`, [`node`]: pods as real containers, their start latency
//! beside `crun run`, and the node's memory; with `--suite rbac`, [`rbac`]: the cost of
//! authorization with 1,000 RoleBindings present; with `--suite join`, [`join`]: `skiff
//! agent` from start to a Ready node; with `--suite proxy`, [`proxy`]: Services
//! programmed as nftables rules (1,000 Services, 5,000 endpoints) and the time of one
//! Service's endpoint change (root, in a network namespace of its own); with `--suite
//! policy`, [`policy`]: NetworkPolicies programmed the same way and the time of one
//! pod's label change (root); with `--suite dns`, [`dns`]: the node's cluster DNS
//! answering cluster names (in-process, over loopback UDP); with `--suite net`,
//! [`net`]: the pod network's data path (pod to pod, across nodes, through a ClusterIP,
//! cluster DNS from a pod) beside bare namespaces (root).

mod crun;
mod dns;
mod image;
mod join;
mod net;
mod netns;
mod node;
mod policy;
mod proxy;
mod rbac;
mod scale;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// The skiff binary to measure.
    #[arg(long, default_value = "target/release/skiff")]
    skiff: PathBuf,
    /// Concurrent clients for the throughput runs.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long each throughput run lasts, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// How many pods for the large-list and memory run.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// The port to run the server on.
    #[arg(long, default_value_t = 17443)]
    port: u16,
    /// Which suite: `control-plane` (the API and datastore), `scale` (simulated
    /// nodes, scheduling, a large Deployment, a steady cluster), `node` (real
    /// containers: pod start latency beside crun, the node's memory), `rbac` (the
    /// cost of authorization), `join`, `proxy` (Services as nftables rules; root),
    /// `policy` (NetworkPolicies as nftables rules; root), `dns`
    /// (cluster DNS answering cluster names) or `net` (the pod network's data path beside
    /// bare namespaces; root).
    #[arg(long, default_value = "control-plane")]
    suite: String,
    /// Scale suite: simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Scale suite: bare pods in each of the two scheduling runs (while creating, and as a backlog)
    #[arg(long, default_value_t = 10_000)]
    sched_pods: usize,
    /// Scale suite: replicas of the large Deployment.
    #[arg(long, default_value_t = 10_000)]
    replicas: usize,
    /// Scale suite: pods in the steady cluster.
    #[arg(long, default_value_t = 30_000)]
    total_pods: usize,
    /// Node suite: pods started one after another for the start latency (and runs of
    /// crun for its baseline).
    #[arg(long, default_value_t = 50)]
    start_pods: usize,
    /// Node suite: pods running while the node's memory is measured.
    #[arg(long, default_value_t = 30)]
    running_pods: usize,
    /// Node suite: the pods' imagePullPolicy. `IfNotPresent` measures a start with the
    /// image present; `Always` (the default for `busybox`) asks the registry first.
    #[arg(long, default_value = "IfNotPresent")]
    pull_policy: String,
    /// Join suite: agents that join one after another.
    #[arg(long, default_value_t = 10)]
    join_runs: usize,
    /// RBAC suite: RoleBindings present.
    #[arg(long, default_value_t = 1000)]
    role_bindings: usize,
    /// RBAC suite: GETs measured per user.
    #[arg(long, default_value_t = 10_000)]
    gets: usize,
    /// Proxy suite: Services programmed.
    #[arg(long, default_value_t = 1000)]
    proxy_services: usize,
    /// Proxy suite: endpoints per Service.
    #[arg(long, default_value_t = 5)]
    proxy_endpoints: usize,
    /// Proxy suite: one-Service endpoint changes timed.
    #[arg(long, default_value_t = 50)]
    proxy_changes: usize,
    /// Policy suite: pods in the cluster (a tenth on the measured node).
    #[arg(long, default_value_t = 2000)]
    policy_pods: usize,
    /// Policy suite: namespaces, with four policies each.
    #[arg(long, default_value_t = 25)]
    policy_namespaces: usize,
    /// Policy suite: one-pod label changes timed.
    #[arg(long, default_value_t = 50)]
    policy_changes: usize,
    /// DNS suite: Services in the cluster zone.
    #[arg(long, default_value_t = 1000)]
    dns_services: usize,
    /// Net suite: seconds of each test (stream, rr, crr) on each path.
    #[arg(long, default_value_t = 1)]
    net_seconds: u64,
    /// Net suite: rounds over every pair of paths.
    #[arg(long, default_value_t = 9)]
    net_rounds: usize,
    /// Net suite: endpoint changes timed, each way.
    #[arg(long, default_value_t = 20)]
    net_changes: usize,
    /// Net suite: only these pairs of paths, comma-separated (one-node, bare-bridge,
    /// across, bare-vxlan, across-bare-vxlan, clusterip-local, bare-dnat,
    /// clusterip-remote); default: all.
    #[arg(long, value_delimiter = ',')]
    net_pairs: Vec<String>,
    /// Net suite: once every path answers, print where each is and wait for a line on
    /// standard input before measuring, for experiments by hand on a live lab.
    #[arg(long)]
    net_hold: bool,
    /// Net suite: the cluster's pod network backend (vxlan or host-gw; the hosts share
    /// one L2, so host-gw works).
    #[arg(long, default_value = "vxlan")]
    net_backend: String,
}

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    skiff: PathBuf,
    port: u16,
    kubeconfig: PathBuf,
    db: PathBuf,
    /// Where the server's log goes; `None`: the bench's stderr.
    log: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(skiff: &Path, port: u16) -> Result<Server> {
        Server::start_with(skiff, port, &[])
    }

    /// Starts a server on a fresh data dir with `extra` flags.
    fn start_with(skiff: &Path, port: u16, extra: &[&str]) -> Result<Server> {
        Server::start_in(tempfile::tempdir()?, skiff, port, extra, None)
    }

    /// Starts a server whose data dir is `dir/data`, which the caller may have filled
    /// (an image in the node's air-gap folder), with `extra` flags and its log written
    /// to `log` if given.
    fn start_in(
        dir: tempfile::TempDir,
        skiff: &Path,
        port: u16,
        extra: &[&str],
        log: Option<PathBuf>,
    ) -> Result<Server> {
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let child = spawn_server(skiff, port, dir.path(), &kubeconfig, extra, log.as_deref())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !kubeconfig.exists() {
            if Instant::now() > deadline {
                bail!("server did not become ready in 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let db = dir.path().join("data/server/db/state.db");
        Ok(Server {
            child,
            dir,
            skiff: skiff.to_path_buf(),
            port,
            kubeconfig,
            db,
            log,
        })
    }

    /// Stops the server as a service manager does: SIGTERM, then SIGKILL if it has not
    /// exited within 60 s.
    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM of the server failed: {status}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("the server did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server (SIGTERM, as a service manager does) and starts it again on the
    /// same data dir with `extra` flags; returns once it answers `/readyz`.
    async fn restart(&mut self, extra: &[&str]) -> Result<()> {
        self.terminate()?;
        self.child = spawn_server(
            &self.skiff,
            self.port,
            self.dir.path(),
            &self.kubeconfig,
            extra,
            self.log.as_deref(),
        )?;
        let t = target(&self.kubeconfig, self.port)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Conn::open(&t).await {
                if matches!(c.call("GET", "/readyz", None).await, Ok((200, _))) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("server did not answer /readyz within 30 s of a restart");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("reading VmRSS")
    }
}

/// Stops the containers of the node whose data folder is `data_dir` (`skiff killall`)
/// and removes their logs under `/var/log/pods`: those of the pods it has a folder for.
fn stop_node(skiff: &Path, data_dir: &Path) {
    let uids: Vec<String> = std::fs::read_dir(data_dir.join("agent/pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match Command::new(skiff)
        .arg("killall")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "skiff killall failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("skiff killall did not run: {e}"),
    }
    for e in std::fs::read_dir("/var/log/pods")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if uids.iter().any(|u| name.ends_with(&format!("_{u}"))) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Keeps `dir` on disk if something is still mounted under it: removing it would reach
/// into the mounts.
fn keep_if_mounted(dir: &mut tempfile::TempDir) {
    let path = dir.path().to_string_lossy().into_owned();
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&path)))
        .count();
    if mounted > 0 {
        eprintln!("{mounted} mounts left under {path}; keeping it");
        dir.disable_cleanup(true);
    }
}

fn spawn_server(
    skiff: &Path,
    port: u16,
    dir: &Path,
    kubeconfig: &Path,
    extra: &[&str],
    log: Option<&Path>,
) -> Result<Child> {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Stdio::inherit(),
    };
    Command::new(skiff)
        .args([
            "server",
            "--config",
            "/dev/null",
            "--bind-address",
            "127.0.0.1",
        ])
        .arg("--https-listen-port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--write-kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        // SKIFF_BENCH_SERVER_LOG sets the server's log filter, to see inside a run.
        .env(
            "SKIFF_LOG",
            std::env::var("SKIFF_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", skiff.display()))
}

/// What a client needs to talk to the server.
#[derive(Clone)]
struct Target {
    tls: Arc<rustls::ClientConfig>,
    addr: String,
}

fn target(kubeconfig: &Path, port: u16) -> Result<Target> {
    let kc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    let b64 = |p: &str| -> Result<Vec<u8>> {
        let s = kc
            .pointer(p)
            .and_then(Value::as_str)
            .context(p.to_string())?;
        Ok(base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            s,
        )?)
    };
    let ca = b64("/clusters/0/cluster/certificate-authority-data")?;
    let cert = b64("/users/0/user/client-certificate-data")?;
    let key = b64("/users/0/user/client-key-data")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Target {
        tls: Arc::new(tls),
        addr: format!("127.0.0.1:{port}"),
    })
}

/// One keep-alive HTTPS/1.1 connection.
struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(t: &Target) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(&t.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (send, conn) = http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes)> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("accept", "application/json");
        let body = match body {
            Some(b) => {
                let content_type = if method == "PATCH" {
                    "application/merge-patch+json"
                } else {
                    "application/json"
                };
                req = req.header("content-type", content_type);
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        self.send.ready().await?;
        let resp = self.send.send_request(req.body(body)?).await?;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((code, bytes))
    }
}

fn configmap(name: &str, i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "labels": {"bench": "yes"}}, "data": {"i": i.to_string(), "payload": "x".repeat(200)}})
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench", "tier": "web", "pod-template-hash": "7d9c8b6f5"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.2.3", "ports": [{"containerPort": 8080, "name": "http"}],
            "env": [{"name": "MODE", "value": "production"}, {"name": "LEVEL", "value": "info"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}}],
            "nodeName": "node-1"}
    })
}

struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn new(mut v: Vec<Duration>) -> Stats {
        v.sort();
        Stats { sorted: v }
    }
    fn pct(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.sorted.len() as f64 - 1.0) * p).round() as usize;
        self.sorted[i]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Runs `clients` workers for `secs`, each calling `op(conn, worker, seq)`; returns ops/s and latencies.
async fn throughput<F, Fut>(t: &Target, clients: usize, secs: u64, op: F) -> Result<(f64, Stats)>
where
    F: Fn(Conn, usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(Conn, Duration)>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let t = t.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&t).await?;
            let mut lat = Vec::new();
            let mut seq = 0;
            while Instant::now() < deadline {
                let (c, d) = op(conn, w, seq).await?;
                conn = c;
                lat.push(d);
                seq += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, Stats::new(all)))
}

/// The physical limit: the same rows into SQLite with the same settings, one transaction
/// per row and one per batch of `clients` rows.
fn sqlite_baseline(rows: usize, batch: usize) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE log (revision INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB NOT NULL, create_revision INTEGER NOT NULL, prev_revision INTEGER NOT NULL, deleted INTEGER NOT NULL)")?;
    let value = configmap("x", 0).to_string();
    let mut run = |per_tx: usize, offset: usize| -> Result<f64> {
        let start = Instant::now();
        let mut rev = offset;
        while rev < offset + rows {
            let tx = conn.transaction()?;
            for _ in 0..per_tx {
                rev += 1;
                tx.execute(
                    "INSERT INTO log VALUES (?1, ?2, ?3, ?1, 0, 0)",
                    rusqlite::params![
                        rev as i64,
                        format!("/registry/core/configmaps/default/cm-{rev}"),
                        value.as_bytes()
                    ],
                )?;
            }
            tx.commit()?;
        }
        Ok(rows as f64 / start.elapsed().as_secs_f64())
    };
    let single = run(1, 0)?;
    let batched = run(batch, rows)?;
    Ok((single, batched))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "machine: {} cores, {machine}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    match args.suite.as_str() {
        "control-plane" => {}
        "scale" => {
            return scale::run(scale::Plan {
                skiff: &args.skiff,
                port: args.port,
                nodes: args.nodes,
                sched_pods: args.sched_pods,
                replicas: args.replicas,
                total_pods: args.total_pods,
                clients: args.clients,
            })
            .await;
        }
        "node" => {
            return node::run(node::Plan {
                skiff: &args.skiff,
                start_pods: args.start_pods,
                running_pods: args.running_pods,
                pull_policy: &args.pull_policy,
            })
            .await;
        }
        "rbac" => {
            return rbac::run(rbac::Plan {
                skiff: &args.skiff,
                port: args.port,
                bindings: args.role_bindings,
                gets: args.gets,
            })
            .await;
        }
        "join" => {
            return join::run(join::Plan {
                skiff: &args.skiff,
                port: args.port,
                runs: args.join_runs,
            })
            .await;
        }
        "proxy" => {
            return proxy::run(proxy::Plan {
                services: args.proxy_services,
                endpoints: args.proxy_endpoints,
                changes: args.proxy_changes,
            });
        }
        "policy" => {
            return policy::run(policy::Plan {
                pods: args.policy_pods,
                namespaces: args.policy_namespaces,
                changes: args.policy_changes,
            });
        }
        "dns" => {
            return dns::run(dns::Plan {
                services: args.dns_services,
                clients: args.clients,
                seconds: args.seconds,
            })
            .await;
        }
        "net" => {
            return net::run(net::Plan {
                skiff: &args.skiff,
                seconds: args.net_seconds,
                rounds: args.net_rounds,
                dns_clients: args.clients,
                changes: args.net_changes,
                hold: args.net_hold,
                backend: &args.net_backend,
                pairs: args.net_pairs.clone(),
            })
            .await;
        }
        other => {
            bail!(
                "--suite: unknown suite {other:?} (control-plane, scale, node, rbac, join, proxy, policy, dns or net)"
            )
        }
    }

    let server = Server::start(&args.skiff, args.port)?;
    let t = target(&server.kubeconfig, args.port)?;
    // Let start-up allocations settle before reading idle memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "idle RSS: {:.1} MiB (goal <= 40 MiB)",
        server.rss_kib()? as f64 / 1024.0
    );

    // Creates.
    let (creates, cstats) =
        throughput(&t, args.clients, args.seconds, |mut c, w, seq| async move {
            let body = configmap(&format!("cm-{w}-{seq}"), seq);
            let s = Instant::now();
            let (code, _) = c
                .call("POST", "/api/v1/namespaces/default/configmaps", Some(&body))
                .await?;
            if code != 201 {
                bail!("create answered {code}");
            }
            Ok((c, s.elapsed()))
        })
        .await?;
    let created = (creates * args.seconds as f64) as usize;
    println!(
        "creates: {creates:.0}/s with {} clients (p50 {}, p99 {}) (goal >= 2000/s)",
        args.clients,
        ms(cstats.pct(0.5)),
        ms(cstats.pct(0.99))
    );

    // Updates: each client rewrites its own first 100 objects (unconditional PUT).
    let (updates, ustats) =
        throughput(&t, args.clients, args.seconds, |mut c, w, seq| async move {
            let name = format!("cm-{w}-{}", seq % 100);
            let body = configmap(&name, seq + 1);
            let s = Instant::now();
            let (code, _) = c
                .call(
                    "PUT",
                    &format!("/api/v1/namespaces/default/configmaps/{name}"),
                    Some(&body),
                )
                .await?;
            if code != 200 {
                bail!("update answered {code}");
            }
            Ok((c, s.elapsed()))
        })
        .await?;
    println!(
        "updates: {updates:.0}/s with {} clients (p50 {}, p99 {})",
        args.clients,
        ms(ustats.pct(0.5)),
        ms(ustats.pct(0.99))
    );

    let (raw_single, raw_batched) =
        tokio::task::spawn_blocking(move || sqlite_baseline(5_000, 8)).await??;
    println!(
        "sqlite direct (same rows, WAL, synchronous=FULL): {raw_single:.0} rows/s one per transaction, {raw_batched:.0} rows/s 8 per transaction"
    );
    println!(
        "ratio: skiff creates / sqlite one-per-transaction = {:.2}; / sqlite 8-per-transaction = {:.2}",
        creates / raw_single,
        creates / raw_batched
    );

    // Paced single-object writes at 200/s.
    let mut conn = Conn::open(&t).await?;
    let mut lat = Vec::new();
    let interval = Duration::from_millis(5);
    let start = Instant::now();
    for i in 0..(200 * args.seconds as usize) {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let name = format!("cm-0-{}", i % 100);
        let s = Instant::now();
        let (code, _) = conn
            .call(
                "PUT",
                &format!("/api/v1/namespaces/default/configmaps/{name}"),
                Some(&configmap(&name, i)),
            )
            .await?;
        if code != 200 {
            bail!("paced update answered {code}");
        }
        lat.push(s.elapsed());
    }
    let paced = Stats::new(lat);
    println!(
        "single-object write at 200/s: p50 {}, p99 {} (goal p99 <= 20 ms)",
        ms(paced.pct(0.5)),
        ms(paced.pct(0.99))
    );

    // GET and LIST latency.
    let mut get_lat = Vec::new();
    for i in 0..2000 {
        let s = Instant::now();
        let (code, _) = conn
            .call(
                "GET",
                &format!("/api/v1/namespaces/default/configmaps/cm-1-{}", i % 100),
                None,
            )
            .await?;
        if code != 200 {
            bail!("get answered {code}");
        }
        get_lat.push(s.elapsed());
    }
    let g = Stats::new(get_lat);
    println!(
        "GET one configmap: p50 {}, p99 {}",
        ms(g.pct(0.5)),
        ms(g.pct(0.99))
    );

    // Watch delivery: a watcher on its own connection; a writer stamps the send time.
    let watch_lat = watch_latency(&t, 500).await?;
    println!(
        "watch delivery: p50 {}, p99 {}",
        ms(watch_lat.pct(0.5)),
        ms(watch_lat.pct(0.99))
    );

    let db = std::fs::metadata(&server.db).map(|m| m.len()).unwrap_or(0);
    let wal = std::fs::metadata(server.db.with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "database after {created} configmaps created and rewritten: {:.1} MiB + WAL {:.1} MiB",
        db as f64 / 1048576.0,
        wal as f64 / 1048576.0
    );
    drop(conn);
    drop(server);

    // 10,000 pods on a fresh server: creation, LIST latency, memory.
    let server = Server::start(&args.skiff, args.port + 1)?;
    let t = target(&server.kubeconfig, args.port + 1)?;
    let mut conn = Conn::open(&t).await?;
    let (code, _) = conn
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})),
        )
        .await?;
    if code != 201 {
        bail!("namespace create answered {code}");
    }
    let per = args.pods.div_ceil(args.clients);
    let mut tasks = Vec::new();
    for w in 0..args.clients {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&t).await?;
            for i in 0..per {
                let (code, _) = c
                    .call(
                        "POST",
                        "/api/v1/namespaces/bench/pods",
                        Some(&pod(&format!("pod-{w}-{i}"))),
                    )
                    .await?;
                if code != 201 {
                    bail!("pod create answered {code}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut list_lat = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let s = Instant::now();
        let (code, body) = conn
            .call("GET", "/api/v1/namespaces/bench/pods", None)
            .await?;
        if code != 200 {
            bail!("list answered {code}");
        }
        list_lat.push(s.elapsed());
        bytes = body.len();
    }
    let l = Stats::new(list_lat);
    println!(
        "LIST {} pods ({:.1} MiB): p50 {}, p99 {} (goal <= 150 ms)",
        per * args.clients,
        bytes as f64 / 1048576.0,
        ms(l.pct(0.5)),
        ms(l.pct(0.99))
    );
    println!(
        "RSS with {} pods stored: {:.1} MiB (goal <= 150 MiB)",
        per * args.clients,
        server.rss_kib()? as f64 / 1024.0
    );
    Ok(())
}

async fn watch_latency(t: &Target, n: usize) -> Result<Stats> {
    let tcp = tokio::net::TcpStream::connect(&t.addr).await?;
    let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut writer = Conn::open(t).await?;
    let (code, body) = writer
        .call("GET", "/api/v1/namespaces/default/configmaps?limit=1", None)
        .await?;
    if code != 200 {
        bail!("list answered {code}");
    }
    let rv = serde_json::from_slice::<Value>(&body)?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let req = http::Request::builder()
        .uri(format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&labelSelector=watch%3Dyes"))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let resp = send.send_request(req).await?;
    let mut body = resp.into_body();
    let base = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut lat = Vec::new();
        while lat.len() < n {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame?;
            if let Some(d) = frame.data_ref() {
                buf.extend_from_slice(d);
            }
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let ev: Value = serde_json::from_slice(&line)?;
                if let Some(sent) = ev
                    .pointer("/object/data/sentMicros")
                    .and_then(Value::as_str)
                {
                    let sent: u64 = sent.parse()?;
                    let now = base.elapsed().as_micros() as u64;
                    lat.push(Duration::from_micros(now.saturating_sub(sent)));
                }
            }
        }
        anyhow::Ok(lat)
    });
    for i in 0..n {
        let name = format!("w-{i}");
        let mut obj = configmap(&name, i);
        obj["metadata"]["labels"] = json!({"watch": "yes"});
        obj["data"]["sentMicros"] = (base.elapsed().as_micros() as u64).to_string().into();
        let (code, _) = writer
            .call("POST", "/api/v1/namespaces/default/configmaps", Some(&obj))
            .await?;
        if code != 201 {
            bail!("create answered {code}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let lat = tokio::time::timeout(Duration::from_secs(30), reader).await???;
    Ok(Stats::new(lat))
}
