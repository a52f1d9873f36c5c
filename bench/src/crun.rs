//! The baseline for a container's start: Debian's `crun run` of a bundle whose rootfs is
//! the same busybox layer the node suite's pods run, its process `/bin/true` with no
//! terminal, timed end to end (create, start, run to exit, delete).
//!
//! Debian's crun refuses this machine's hybrid cgroup layout (v1 controllers plus a v2
//! hierarchy at `/sys/fs/cgroup/unified`) unless it runs in a mount namespace where that
//! hierarchy is unmounted. Two ways are timed:
//!
//! - in one long-lived `unshare -m sh` that unmounted it once: the bench writes
//!   `crun run …; echo $?` to the shell and times until the status comes back, so each
//!   figure is the shell's fork and exec of crun plus crun's whole run. This is the one
//!   compared with skiff: the namespace is a workaround for this host, not a cost crun
//!   has where it runs as packaged.
//! - each run wrapped in its own `unshare -m sh -c 'umount …; exec crun run …'`, with the
//!   wrapper alone (`exec true` instead of crun) timed too, to show what it adds.

use crate::Stats;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Unmounts the cgroup v2 hierarchy of the hybrid layout, in the shell's namespace only.
const UMOUNT: &str = "umount /sys/fs/cgroup/unified 2>/dev/null";

/// The three timings, `n` runs each.
pub struct Baseline {
    /// `crun run` from a shell already in the namespace.
    pub in_namespace: Stats,
    /// `crun run` wrapped in a fresh `unshare -m sh -c 'umount …; exec crun run …'`.
    pub wrapped: Stats,
    /// The wrapper alone (`exec true`).
    pub wrapper: Stats,
}

/// Makes a bundle of `layer` and times `n` runs of each kind. Blocking.
pub fn run(layer: &[u8], n: usize) -> Result<Baseline> {
    let dir = tempfile::Builder::new()
        .prefix("skiff-bench-crun-")
        .tempdir()?;
    let bundle = dir.path();
    tar::Archive::new(layer)
        .unpack(bundle.join("rootfs"))
        .context("unpacking the busybox layer")?;
    let out = Command::new("crun")
        .arg("spec")
        .current_dir(bundle)
        .output()
        .context("running crun spec (install Debian's crun)")?;
    if !out.status.success() {
        bail!(
            "crun spec: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;

    let tag = std::process::id();
    let in_namespace = in_one_namespace(bundle, n, tag)?;
    let mut wrapped = Vec::with_capacity(n);
    let mut wrapper = Vec::with_capacity(n);
    for i in 0..n {
        let script = format!(
            "{UMOUNT}; exec crun run --bundle {} skiff-bench-{tag}-w{i}",
            bundle.display()
        );
        wrapped.push(timed_unshare(&script)?);
        wrapper.push(timed_unshare(&format!("{UMOUNT}; exec true"))?);
    }
    Ok(Baseline {
        in_namespace,
        wrapped: Stats::new(wrapped),
        wrapper: Stats::new(wrapper),
    })
}

/// `n` runs from one `unshare -m sh` reading commands on its stdin.
fn in_one_namespace(bundle: &Path, n: usize, tag: u32) -> Result<Stats> {
    let errors = bundle.join("crun.err");
    let mut shell = Command::new("unshare")
        .args(["-m", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting unshare -m sh")?;
    let mut stdin = shell.stdin.take().context("the shell's stdin")?;
    let mut stdout = BufReader::new(shell.stdout.take().context("the shell's stdout")?);
    let mut line = String::new();
    let mut ask = |command: &str, line: &mut String| -> Result<Duration> {
        let start = Instant::now();
        stdin.write_all(command.as_bytes())?;
        stdin.flush()?;
        line.clear();
        if stdout.read_line(line)? == 0 {
            bail!("the namespace's shell exited");
        }
        Ok(start.elapsed())
    };
    ask(&format!("{UMOUNT}; echo ready\n"), &mut line)?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let command = format!(
            "crun run --bundle {} skiff-bench-{tag}-{i} </dev/null >/dev/null 2>>{}; echo $?\n",
            bundle.display(),
            errors.display()
        );
        let took = ask(&command, &mut line)?;
        if line.trim() != "0" {
            bail!(
                "crun run exited with {}: {}",
                line.trim(),
                std::fs::read_to_string(&errors).unwrap_or_default()
            );
        }
        times.push(took);
    }
    drop(stdin);
    shell.wait()?;
    Ok(Stats::new(times))
}

/// Runs `unshare -m sh -c script` and answers how long it took.
fn timed_unshare(script: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running unshare")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "unshare -m sh -c {script:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}
