//! A network namespace of the bench's own, for the suites that program the kernel's
//! nftables: made with `ip netns add`, entered by one thread that runs the suite, and
//! deleted at the end, also on failure.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// The namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `measure` on a thread inside a new namespace named after `suite`, so that the
/// netlink sockets it opens program that namespace and not the host. Needs root.
pub fn run_inside(suite: &str, measure: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    let name = format!("skiff-bench-{suite}-{}", std::process::id());
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .with_context(|| {
            format!("running ip netns add (the {suite} suite needs root and iproute2)")
        })?;
    if !out.status.success() {
        bail!(
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ns = Netns(name);
    let path = format!("/run/netns/{}", ns.0);
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            let f = std::fs::File::open(&path).context("opening the namespace")?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the namespace")?;
            measure()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
