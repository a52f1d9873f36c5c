//! `--suite join`: how long `skiff agent` takes from its start to a Ready node, joining
//! afresh (CA fetch and check, token, node password, two certificates issued) beside
//! the same agent started again with the identity it kept, its Node deleted in between
//! so that it registers anew: the difference is what joining costs.

use crate::{ms, target, Conn, Server, Stats};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the join suite is told.
pub struct Plan<'a> {
    /// The skiff binary.
    pub skiff: &'a Path,
    /// The server's port.
    pub port: u16,
    /// How many agents join, one after another.
    pub runs: usize,
}

fn spawn_agent(skiff: &Path, port: u16, token: &str, dir: &Path, name: &str) -> Result<Child> {
    Command::new(skiff)
        .args(["agent", "--config", "/dev/null", "--server"])
        .arg(format!("https://127.0.0.1:{port}"))
        .arg("--token")
        .arg(token)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--node-ip",
            "127.0.0.1",
            "--kubelet-port",
            "0",
            "--node-name",
            name,
        ])
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", skiff.display()))
}

fn stop(child: &mut Child) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            bail!("the agent did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Polls node `name` every 2 ms until it is Ready.
async fn wait_ready(c: &mut Conn, name: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = c
            .call("GET", &format!("/api/v1/nodes/{name}"), None)
            .await?;
        if code == 200 {
            let node: Value = serde_json::from_slice(&body)?;
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("the agent exited with {status} before its node was Ready");
        }
        if Instant::now() > deadline {
            bail!("node {name} was not Ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the suite and prints its figures.
pub async fn run(plan: Plan<'_>) -> Result<()> {
    let server = Server::start_with(plan.skiff, plan.port, &["--disable-agent"])?;
    let t = target(&server.kubeconfig, plan.port)?;
    let token = std::fs::read_to_string(server.dir.path().join("data/server/token"))
        .context("reading the server token")?;
    let token = token.trim();
    let mut c = Conn::open(&t).await?;
    let (mut fresh, mut kept) = (Vec::new(), Vec::new());
    for run in 0..plan.runs {
        let dir = tempfile::tempdir()?;
        let name = format!("bench-join-{run}");
        let started = Instant::now();
        let mut agent = spawn_agent(plan.skiff, plan.port, token, dir.path(), &name)?;
        wait_ready(&mut c, &name, &mut agent).await?;
        fresh.push(started.elapsed());
        stop(&mut agent)?;
        let (code, _) = c
            .call("DELETE", &format!("/api/v1/nodes/{name}"), None)
            .await?;
        if code != 200 {
            bail!("deleting node {name} answered {code}");
        }
        let started = Instant::now();
        let mut agent = spawn_agent(plan.skiff, plan.port, token, dir.path(), &name)?;
        wait_ready(&mut c, &name, &mut agent).await?;
        kept.push(started.elapsed());
        stop(&mut agent)?;
        let _ = c
            .call("DELETE", &format!("/api/v1/nodes/{name}"), None)
            .await?;
    }
    let (fresh, kept) = (Stats::new(fresh), Stats::new(kept));
    println!(
        "join: skiff agent start to node Ready, {} agents: p50 {}, max {} (goal <= 1000 ms)",
        plan.runs,
        ms(fresh.pct(0.5)),
        ms(fresh.pct(1.0))
    );
    println!(
        "  beside a restart with the identity kept (registering again): p50 {}, max {}; ratio at p50 {:.2}x",
        ms(kept.pct(0.5)),
        ms(kept.pct(1.0)),
        fresh.pct(0.5).as_secs_f64() / kept.pct(0.5).as_secs_f64().max(1e-9)
    );
    Ok(())
}
